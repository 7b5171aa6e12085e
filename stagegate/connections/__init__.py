"""The connections file: which adapter serves each port (stagegate.ports), with secrets as references."""

from stagegate.connections.load import (
    DEFAULT_SPECS,
    ENV_VAR,
    Choice,
    Connections,
    ConnectionsError,
    Problem,
    connections_path,
    default_connections,
    load_connections,
    parse_connections,
    resolve_connections,
)
from stagegate.connections.registry import GROUPS, UnknownAdapter, adapter_class, adapter_types
from stagegate.connections.secrets import EnvSecret, PrefectSecret, SecretRef, SecretUnavailable

__all__ = [
    "DEFAULT_SPECS",
    "ENV_VAR",
    "GROUPS",
    "Choice",
    "Connections",
    "ConnectionsError",
    "EnvSecret",
    "PrefectSecret",
    "Problem",
    "SecretRef",
    "SecretUnavailable",
    "UnknownAdapter",
    "adapter_class",
    "adapter_types",
    "connections_path",
    "default_connections",
    "load_connections",
    "parse_connections",
    "resolve_connections",
]
