"""Approver identity: an approval counts only with the approver's own token.

A policy names who may answer an approval point; a name alone proves nothing (anyone who reaches the
Prefect API can type ``release-manager``). So each approver gets a token (``stagegate approvers add
NAME``, printed once), and the ledger keeps only a salted scrypt digest of it (table ``approver_tokens``):
whoever reads the ledger cannot answer with what they read. An answer is accepted when its approver is
on the policy's list *and* its token matches that approver's digest (compared in constant time).

What each path proves:

- ``stagegate approve|reject`` sends the token with the answer (from ``--token`` or
  ``$STAGEGATE_APPROVER_TOKEN``): the answer comes from someone holding that approver's token.
- The Prefect UI form has a ``token`` field: the same proof. The field asks for a password input, but
  Prefect's form shows it as plain text (seen with Prefect 3.9): type it out of view. Prefect stores a
  run's input in its database, so the flow deletes the answer from Prefect as soon as it has read it;
  until then, whoever can read flow-run inputs through the Prefect API could copy the token: keep the API
  private (the stack binds 127.0.0.1) and rotate a token that may have leaked (``approvers add`` again).

Tokens are bearer secrets; they do not bind an answer to one promotion. Revoking (``approvers revoke``)
or re-issuing invalidates the old token at once, for every promotion still waiting.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, select, update

from stagegate.events.store import approver_tokens

TOKEN_PREFIX = "sgt_"  # recognisable in a leaked log or a secret scanner
# scrypt cost (RFC 7914): n=2**14, r=8 takes about 40 ms and 16 MiB here, cheap for a person answering,
# costly for someone guessing offline from a copied ledger (a token has 192 random bits anyway).
SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


class UnknownApprover(KeyError):
    """No token was ever issued to this approver (or it was revoked)."""


@dataclass(frozen=True)
class Approver:
    name: str
    issued_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _digest(token: str, salt: str) -> str:
    return hashlib.scrypt(token.encode(), salt=bytes.fromhex(salt), **SCRYPT).hex()


def issue_token(events: Any, name: str) -> str:
    """A new token for ``name`` (replacing any earlier one, which stops working); only its digest is kept."""
    name = name.strip()
    if not name:
        raise ValueError("an approver needs a name")
    token = TOKEN_PREFIX + secrets.token_urlsafe(24)
    salt = secrets.token_hex(16)
    row = {"salt": salt, "digest": _digest(token, salt), "issued_at": datetime.now(UTC), "revoked_at": None}
    with events.engine.begin() as conn:
        conn.execute(delete(approver_tokens).where(approver_tokens.c.name == name))
        conn.execute(insert(approver_tokens).values(name=name, **row))
    return token


def revoke(events: Any, name: str) -> None:
    """``name``'s token proves nothing from now on; :class:`UnknownApprover` if there is none."""
    with events.engine.begin() as conn:
        changed = conn.execute(
            update(approver_tokens)
            .where(approver_tokens.c.name == name, approver_tokens.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        ).rowcount
    if changed != 1:
        raise UnknownApprover(f"no active token for approver {name!r}")


def approvers(events: Any) -> list[Approver]:
    """Every approver a token was issued to, by name (revoked ones included, marked)."""
    query = select(approver_tokens).order_by(approver_tokens.c.name)
    with events.engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [Approver(r["name"], r["issued_at"], r["revoked_at"]) for r in rows]


def check_token(events: Any, name: str, token: str | None) -> str | None:
    """None when ``token`` is ``name``'s active token; otherwise why the answer proves nothing."""
    if not token:
        return f"no token given for {name!r} (`stagegate approve --token`, or the form's token field)"
    with events.engine.connect() as conn:
        row = conn.execute(select(approver_tokens).where(approver_tokens.c.name == name)).mappings().first()
    if row is None:
        return f"no token was issued to {name!r} (`stagegate approvers add {name}`)"
    if row["revoked_at"] is not None:
        return f"the token of {name!r} was revoked"
    if not hmac.compare_digest(_digest(token.strip(), row["salt"]), row["digest"]):
        return f"the token does not match {name!r}'s"
    return None
