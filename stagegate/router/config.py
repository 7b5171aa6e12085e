"""The router's options and its admin token.

The token comes from the environment variable ``STAGEGATE_ROUTER_TOKEN`` or, when a Prefect Secret block
name is given, from that block; it is never logged or echoed, and the router refuses to start without one.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

TOKEN_ENV = "STAGEGATE_ROUTER_TOKEN"
#: The shortest admin token accepted: a short token can be guessed over the network.
MIN_TOKEN_LENGTH = 16


class TokenError(RuntimeError):
    """No usable admin token: the router does not start without one."""


class RouterConfig(BaseModel):
    """Everything one router process needs. ``state`` is a JSON file path or a SQLAlchemy URL where the
    split persists; ``events`` a SQLAlchemy URL for the request log (default: a SQLite file beside the
    state, or the state's database when that is a URL)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1)
    tracking_uri: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    state: str = Field(min_length=1)
    events: str | None = None
    shadow_share: float = Field(default=1.0, ge=0.0, le=1.0)
    queue_size: int = Field(default=1000, ge=1)
    shadow_workers: int = Field(default=1, ge=1, le=64)
    timeout_seconds: float = Field(default=0.5, gt=0.0)
    max_body_bytes: int = Field(default=64 * 1024, ge=256)
    max_k: int = Field(default=1000, ge=1)
    serving_threads: int = Field(default=8, ge=1, le=256)

    @field_validator("state")
    @classmethod
    def _state_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("state must name a file or a SQLAlchemy URL")
        return value

    @property
    def state_is_url(self) -> bool:
        return "://" in self.state

    @property
    def events_url(self) -> str:
        """Where the request log goes (see the class docstring for the default)."""
        if self.events:
            return self.events
        if self.state_is_url:
            return self.state
        path = Path(self.state).resolve()
        return f"sqlite:///{path.with_name(path.stem + '-events.db')}"


def load_token(secret_block: str | None = None) -> str:
    """The admin token: the Prefect Secret block ``secret_block`` if named, else ``$STAGEGATE_ROUTER_TOKEN``.

    Raises TokenError (naming where it looked, never the value) if there is none or it is too short."""
    if secret_block:
        try:
            from prefect.blocks.system import Secret

            token = str(Secret.load(secret_block).get())
        except Exception as exc:  # a missing block, an unreachable API: no token, no start
            raise TokenError(
                f"cannot read the admin token from Prefect Secret block {secret_block!r}: "
                f"{type(exc).__name__}"
            ) from None
        where = f"Prefect Secret block {secret_block!r}"
    else:
        token = os.environ.get(TOKEN_ENV, "")
        where = f"${TOKEN_ENV}"
    if not token:
        raise TokenError(f"no admin token: set {where} (the router refuses to start without one)")
    if len(token) < MIN_TOKEN_LENGTH:
        raise TokenError(f"the admin token in {where} is shorter than {MIN_TOKEN_LENGTH} characters")
    return token
