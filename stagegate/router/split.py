"""Who serves whom: stable user hashing, and the split persisted where a restart finds it.

A user's bucket is ``sha256(salt, user_id)`` read as a number in ``[0, 1)``: the same in every process and
after every restart (Python's ``hash()`` is salted per process and would reshuffle users). The salt is the
candidate version, so each promotion draws its own users, and a user below the weight stays on the
candidate as the weight ramps up (buckets do not move, the threshold only rises).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Literal

from stagegate.ports import Split, TrafficError

Arm = Literal["champion", "candidate"]
_SCALE = float(2**64)


def bucket(salt: str, key: str | int) -> float:
    """A stable number in ``[0, 1)`` for ``key`` under ``salt`` (the first 8 bytes of a sha256)."""
    digest = hashlib.sha256(f"{salt}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def assign(split: Split, user_id: int) -> Arm:
    """The arm that serves ``user_id`` under ``split``: the candidate for users whose bucket (salted with
    the candidate version) is below ``candidate_weight``, the champion otherwise."""
    if split.candidate is None or split.candidate_weight <= 0.0:
        return "champion"
    return "candidate" if bucket(f"split:{split.candidate}", user_id) < split.candidate_weight else "champion"


def mirrored(split: Split, request_id: str, share: float) -> bool:
    """Whether a champion-served request is mirrored to the candidate in shadow: ``share`` of requests,
    chosen by a hash of the request id (so a retried request is chosen the same way)."""
    if not split.shadow or split.candidate is None or share <= 0.0:
        return False
    return bucket(f"shadow:{split.candidate}", request_id) < share


class SplitStore:
    """The persisted split: a JSON file (written then renamed, fsynced) or one row of a SQL table.

    ``load()`` returns None when no split was ever saved; ``save(split)`` returns only once the split is on
    disk (or committed) and raises TrafficError otherwise."""

    def __init__(self, where: str) -> None:
        self.where = where
        self._engine = None
        if "://" in where:
            from sqlalchemy import Boolean, Column, Float, Integer, MetaData, String, Table, create_engine

            self._engine = create_engine(where, future=True, pool_pre_ping=True)
            self._meta = MetaData()
            self._table = Table(
                "router_split",
                self._meta,
                Column("id", Integer, primary_key=True),
                Column("champion", String(200), nullable=True),
                Column("candidate", String(200), nullable=True),
                Column("candidate_weight", Float, nullable=False),
                Column("shadow", Boolean, nullable=False),
            )
            self._meta.create_all(self._engine)
        else:
            self.path = Path(where)

    def describe(self) -> str:
        if self._engine is not None:
            return self._engine.url.render_as_string(hide_password=True)
        return str(self.path)

    def load(self) -> Split | None:
        if self._engine is None:
            if not self.path.exists():
                return None
            try:
                return Split.model_validate_json(self.path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise TrafficError(f"split file {self.path} does not hold a valid split: {exc}") from exc
        from sqlalchemy import select

        with self._engine.connect() as conn:
            row = conn.execute(select(self._table).where(self._table.c.id == 1)).mappings().first()
        if row is None:
            return None
        return Split(**{k: row[k] for k in ("champion", "candidate", "candidate_weight", "shadow")})

    def save(self, split: Split) -> None:
        try:
            if self._engine is None:
                self._save_file(split)
            else:
                self._save_sql(split)
        except OSError as exc:
            raise TrafficError(f"cannot persist the split to {self.describe()}: {exc}") from exc

    def _save_file(self, split: Split) -> None:
        # write-then-rename: a crash leaves the old split or the new one, never half a file
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".router-split-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(split.model_dump_json())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _save_sql(self, split: Split) -> None:
        from sqlalchemy.exc import SQLAlchemyError

        values = split.model_dump()
        try:
            with self._engine.begin() as conn:
                updated = conn.execute(self._table.update().where(self._table.c.id == 1).values(**values))
                if updated.rowcount == 0:
                    conn.execute(self._table.insert().values(id=1, **values))
        except SQLAlchemyError as exc:
            raise TrafficError(f"cannot persist the split to {self.describe()}: {exc}") from exc

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
