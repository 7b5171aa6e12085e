"""How a file that does not validate is reported: every problem with its file, field and reason.

Shared by the policy loader (stagegate.policy.load) and the connections loader (stagegate.connections.load),
so that both print ``file: field.path[i]: reason`` the same way and the CLI exits 2 on either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Problem:
    file: str
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field or '<top level>'}: {self.reason}"


class ProblemsError(ValueError):
    """A file that does not validate; ``problems`` lists every one of them (not just the first)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def field_path(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as a field path: ``stages.canary.gates[2].alpha``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def read_yaml(path: str | Path, error: type[ProblemsError]) -> Any:
    """The YAML document in ``path``; an unreadable file or bad YAML raises ``error`` naming the file (and
    the line and column of a syntax error)."""
    import yaml

    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise error([Problem(file, "", f"cannot read: {exc.strerror or exc}")]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise error([Problem(file, where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
