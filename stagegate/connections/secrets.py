"""Secrets in a connections file are references, never values: ``{env: NAME}`` or ``{prefect_secret: BLOCK}``.

A field whose name looks like a secret (password, token, api key, ...) with a literal value, or a URL with a
password in it, is refused when the file is validated, so that a credential never lands in a repository.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# A key is secret-looking when one of its words (split at _ - .) names a secret: ``password``,
# ``db_password``, ``api_key``, ``aws_secret_access_key``, ``token``; not ``passthrough`` or ``tokenizer``.
SECRET_KEY = re.compile(
    r"(^|[_.\-])(password|passwd|passphrase|secret|token|credentials?|apikey|api[_.\-]key|"
    r"accesskey|access[_.\-]key|privatekey|private[_.\-]key)($|[_.\-])",
    re.IGNORECASE,
)
# scheme://user:password@host (a URL that carries its own password)
URL_WITH_PASSWORD = re.compile(r"^[a-z][a-z0-9+.\-]*://[^/@:\s]*:[^/@\s]+@", re.IGNORECASE)


class SecretUnavailable(LookupError):
    """A secret reference that cannot be resolved (unset environment variable, missing Prefect block)."""


class EnvSecret(BaseModel):
    """``{env: NAME}``: the value of environment variable NAME, read when the adapter is built."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    def problem(self) -> str | None:
        return None if os.environ.get(self.env) else f"environment variable {self.env} is not set"

    def resolve(self) -> str:
        if (problem := self.problem()) is not None:
            raise SecretUnavailable(problem)
        return os.environ[self.env]


class PrefectSecret(BaseModel):
    """``{prefect_secret: BLOCK}``: a Prefect Secret block, loaded from the Prefect API when the adapter is
    built (validation does not call the API, so a missing block is found at build time)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefect_secret: str = Field(min_length=1)

    def problem(self) -> str | None:
        return None

    def resolve(self) -> str:
        from prefect.blocks.system import Secret

        try:
            return str(Secret.load(self.prefect_secret).get())
        except Exception as exc:
            raise SecretUnavailable(f"Prefect Secret block {self.prefect_secret!r}: {exc}") from exc


SecretRef = EnvSecret | PrefectSecret


def _is_reference(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("env", "prefect_secret")


def literal_secrets(data: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(field path, reason) for every literal secret in raw file data."""
    if isinstance(data, dict):
        for key, value in data.items():
            where = f"{path}.{key}" if path else str(key)
            scalar = isinstance(value, str | int | float) and not isinstance(value, bool)
            if scalar and SECRET_KEY.search(str(key)) and str(value) != "":
                yield where, "a literal secret is refused: give it as {env: NAME} or {prefect_secret: BLOCK}"
                continue
            if isinstance(value, str) and URL_WITH_PASSWORD.match(value):
                yield (
                    where,
                    (
                        "a password inside a URL is refused: leave it out and give it as a separate "
                        "{env: NAME} or {prefect_secret: BLOCK} field"
                    ),
                )
                continue
            if not _is_reference(value):
                yield from literal_secrets(value, where)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from literal_secrets(value, f"{path}[{index}]")


def unresolved(data: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(field path, reason) for every ``{env: NAME}`` reference in raw file data whose variable is unset.

    Prefect Secret blocks are not looked up here (that needs the Prefect API): a missing block is reported
    when the adapter is built."""
    if isinstance(data, dict):
        if _is_reference(data) and "env" in data and isinstance(data["env"], str):
            if (problem := EnvSecret.model_construct(env=data["env"]).problem()) is not None:
                yield path, problem
            return
        for key, value in data.items():
            yield from unresolved(value, f"{path}.{key}" if path else str(key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from unresolved(value, f"{path}[{index}]")


def secret_references(value: Any, path: str = "") -> Iterator[tuple[str, SecretRef]]:
    """(field path, reference) for every secret reference in a validated adapter config."""
    if isinstance(value, EnvSecret | PrefectSecret):
        yield path, value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from secret_references(getattr(value, name), f"{path}.{name}" if path else name)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from secret_references(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from secret_references(item, f"{path}[{index}]")
