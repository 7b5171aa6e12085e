"""Load and validate a connections file: which adapter serves each port, and its settings.

```yaml
version: 1
traffic:      {type: file}                       # stagegate.traffic entry point
metrics:      {type: events, url: "postgresql+psycopg://stagegate@db:5432/stagegate",
               password: {env: STAGEGATE_EVENTS_PASSWORD}}
offline_data: {type: workspace}
clock:        {type: wall, max_block_seconds: 300}
```

Each port section names an adapter by ``type`` (an entry point in the port's group) and is otherwise
validated by that adapter's own pydantic ``Config``, as a policy's gate entries are by their gate type. A
port left out keeps the embedded default (the simulated world). Every problem is reported with the file,
the field path and the reason (stagegate.policy's format); nothing is built from a file that has one.
Secrets are references only (stagegate.connections.secrets); an unset environment variable is a problem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from stagegate.connections.registry import UnknownAdapter, adapter_class
from stagegate.connections.secrets import SecretUnavailable, literal_secrets, secret_references, unresolved
from stagegate.ports import PORTS
from stagegate.problems import Problem, ProblemsError, field_path, read_yaml

ENV_VAR = "STAGEGATE_CONNECTIONS"
WORKSPACE_FILE = "connections.yaml"
EMBEDDED = "<embedded default>"

#: The embedded default: the simulated world serves, its event store measures, its log is the offline data,
#: and simulated time advances it.
DEFAULT_SPECS: dict[str, dict[str, Any]] = {
    "traffic": {"type": "file"},
    "metrics": {"type": "events"},
    "offline_data": {"type": "workspace"},
    "clock": {"type": "simulated"},
}


class ConnectionsError(ProblemsError):
    """A connections file that does not validate; ``problems`` lists every one of them."""


class AdapterSpec(BaseModel):
    """One port's section: ``type`` plus the adapter's own fields (checked by the adapter's Config)."""

    model_config = ConfigDict(extra="allow")

    type: str


class Header(BaseModel):
    """The file's own fields, beside the port sections."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1


@dataclass
class Choice:
    """The adapter chosen for one port, with its validated config.

    A port the file names is loaded and validated when the file is read. A port left to the embedded
    default is loaded only when it is first used (``cls``, ``config``, ``build``), so that a promotion that
    never reads offline data never imports the default offline-data adapter (the simulator)."""

    port: str
    type: str
    settings: dict[str, Any] = field(default_factory=dict)
    source: str = EMBEDDED
    loaded: tuple[Any, BaseModel] | None = field(default=None, repr=False)

    @property
    def cls(self) -> Any:
        return self._load()[0]

    @property
    def config(self) -> BaseModel:
        return self._load()[1]

    def _load(self) -> tuple[Any, BaseModel]:
        if self.loaded is None:
            loaded, problems = _load_adapter(self.source, self.port, self.type, self.settings, set())
            if loaded is None:
                raise ConnectionsError(problems)
            self.loaded = loaded
        return self.loaded

    def build(self, host: Any) -> Any:
        """Build the adapter; refuses one that does not satisfy the port's protocol."""
        adapter = self.cls.from_config(self.config, host)
        if not isinstance(adapter, PORTS[self.port]):
            raise TypeError(
                f"{self.port} adapter {self.type!r} does not implement {PORTS[self.port].__name__}"
            )
        return adapter

    def check_secrets(self) -> None:
        """Resolve every secret the config references without building the adapter (a port this
        promotion does not use is not started, but a missing secret is still found before anything moves).
        Raises SecretUnavailable naming the port, the field and the secret."""
        if self.loaded is None:  # an embedded default, not loaded yet: its settings reference no secret
            return
        for where, ref in secret_references(self.config):
            try:
                ref.resolve()
            except SecretUnavailable as exc:
                raise SecretUnavailable(f"{self.port}.{where}: {exc}") from exc


@dataclass(frozen=True)
class Connections:
    source: str
    choices: dict[str, Choice] = field(default_factory=dict)

    def build(self, port: str, host: Any) -> Any:
        return self.choices[port].build(host)

    def check_secrets(self, port: str) -> None:
        self.choices[port].check_secrets()

    def describe(self) -> str:
        return ", ".join(f"{port}: {c.type}" for port, c in self.choices.items())


def _pydantic(file: str, exc: ValidationError, prefix: str, skip: set[str]) -> list[Problem]:
    """Problems from a pydantic error, less those at a field already reported (a literal secret)."""
    problems: list[Problem] = []
    for err in exc.errors():
        # A secret-reference union names each member it tried ("EnvSecret", "PrefectSecret") in the location.
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p[:1].isupper()))
        where = ".".join(x for x in (prefix, field_path(loc)) if x)
        problem = Problem(file, where, err["msg"])
        if where not in skip and problem not in problems:
            problems.append(problem)
    return problems


def _load_adapter(
    file: str, port: str, type_name: str, settings: dict[str, Any], reported: set[str]
) -> tuple[tuple[Any, BaseModel] | None, list[Problem]]:
    """The adapter class of ``port``'s ``type_name`` and its validated config, or None and the problems."""
    try:
        cls = adapter_class(port, type_name)
    except UnknownAdapter as exc:
        return None, [Problem(file, f"{port}.type", str(exc))]
    except (ImportError, TypeError) as exc:
        return None, [Problem(file, f"{port}.type", f"adapter {type_name!r} cannot be loaded: {exc}")]
    try:
        return (cls, cls.Config.model_validate(settings)), []
    except ValidationError as exc:
        return None, _pydantic(file, exc, port, reported)


def parse_connections(data: Any, file: str = "<connections>") -> Connections:
    """Validate already-parsed connections data; raises ConnectionsError listing every problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConnectionsError(
            [Problem(file, "", f"expected a mapping at the top level, got {type(data).__name__}")]
        )
    problems = [Problem(file, where, reason) for where, reason in literal_secrets(data)]
    problems += [Problem(file, where, reason) for where, reason in unresolved(data)]
    reported = {p.field for p in problems}
    try:
        Header.model_validate({k: v for k, v in data.items() if k not in PORTS})
    except ValidationError as exc:
        problems.extend(_pydantic(file, exc, "", reported))
    choices: dict[str, Choice] = {}
    for port in PORTS:
        section = data.get(port)
        try:
            raw = DEFAULT_SPECS[port] if section is None else AdapterSpec.model_validate(section).model_dump()
        except ValidationError as exc:
            problems.extend(_pydantic(file, exc, port, reported))
            continue
        type_name = raw["type"]
        settings = {k: v for k, v in raw.items() if k != "type"}
        if section is None:  # the embedded default: loaded when first used
            choices[port] = Choice(port, type_name, settings, source=file)
            continue
        loaded, found = _load_adapter(file, port, type_name, settings, reported)
        problems.extend(found)
        if loaded is not None:
            choices[port] = Choice(port, type_name, settings, source=file, loaded=loaded)
    if problems:
        raise ConnectionsError(problems)
    return Connections(source=file, choices=choices)


def load_connections(path: str | Path) -> Connections:
    """Read and validate a connections YAML file; raises ConnectionsError naming file, field and reason."""
    file = str(path)
    data = read_yaml(path, ConnectionsError)
    return parse_connections(data, file)


def default_connections() -> Connections:
    """The embedded default: the simulated world on every port."""
    return parse_connections({}, EMBEDDED)


def connections_path(workspace_root: Path) -> Path | None:
    """The file in force: ``$STAGEGATE_CONNECTIONS`` (must exist), else the workspace's connections.yaml
    if there is one, else None (the embedded default)."""
    named = os.environ.get(ENV_VAR)
    if named:
        return Path(named)
    local = workspace_root / WORKSPACE_FILE
    return local if local.is_file() else None


def resolve_connections(workspace_root: Path) -> Connections:
    path = connections_path(workspace_root)
    return default_connections() if path is None else load_connections(path)
