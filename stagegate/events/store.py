"""The event store and the promotion ledger, behind one SQLAlchemy URL (SQLite file or PostgreSQL).

- ``events``: one row per served request (who, when, which arm and model version, latency, error, the
  slate, clicks, purchases, revenue, the propensities of what was shown).
- ``promotions``, ``transitions``, ``verdicts``: the promotion ledger. Every state change and every gate
  verdict is written here *before* the pipeline acts on it, so a crashed run can be reconciled.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine

from stagegate.world.schema import ServedBatch

metadata = MetaData()

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("promotion_id", String(36), index=True),
    Column("stage", String(16), index=True),
    Column("step", Integer),
    Column("request_id", Integer),
    Column("t", Float),
    Column("user_id", Integer, index=True),
    Column("user_segment", Integer),
    Column("device", Integer),
    Column("hour", Integer),
    Column("arm", Integer),
    Column("model_version", String(32)),
    Column("latency_ms", Float),
    Column("error", Boolean),
    Column("items", Text),
    Column("shadow_items", Text, nullable=True),
    Column("shadow_latency_ms", Float, nullable=True),
    Column("n_clicks", Integer),
    Column("n_purchases", Integer),
    Column("revenue", Float),
    Column("n_out_of_stock", Integer),
    Column("shadow_n_out_of_stock", Integer, nullable=True),
    Column("min_pscore", Float),
)

promotions = Table(
    "promotions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("model", String(200), nullable=False),
    Column("version", String(32), nullable=False),
    Column("policy_path", Text),
    Column("policy", JSON),
    Column("state", String(32), nullable=False),
    Column("stage", String(16)),
    Column("reason", Text),
    Column("champion_version", String(32)),
    Column("mlflow_run_id", String(64)),
    Column("flow_run_id", String(64)),
    Column("started_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
)

transitions = Table(
    "transitions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("promotion_id", String(36), index=True, nullable=False),
    Column("from_state", String(32)),
    Column("to_state", String(32), nullable=False),
    Column("reason", Text),
    Column("at", DateTime(timezone=True), nullable=False),
)

verdicts = Table(
    "verdicts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("promotion_id", String(36), index=True, nullable=False),
    Column("stage", String(16), nullable=False),
    Column("step", Integer),
    Column("look", Integer),
    Column("gate", String(200), nullable=False),
    Column("metric", String(100)),
    Column("outcome", String(16), nullable=False),
    Column("action", String(16)),
    Column("statistic", Float),
    Column("threshold", Float),
    Column("ci_low", Float),
    Column("ci_high", Float),
    Column("n", Integer),
    Column("message", Text),
    Column("at", DateTime(timezone=True), nullable=False),
)

#: Promotion states; the terminal ones never change again.
TERMINAL_STATES = frozenset({"promoted", "rejected", "rolled_back", "aborted"})


def _now() -> datetime:
    return datetime.now(UTC)


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


class EventStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url, future=True)
        metadata.create_all(self.engine)

    # -- events ---------------------------------------------------------------------------------------
    def append_batch(
        self,
        batch: ServedBatch,
        *,
        promotion_id: str,
        stage: str,
        step: int,
        versions: tuple[str | None, str | None],
    ) -> int:
        """Write one row per request of ``batch``; returns the number of rows."""
        ctx = batch.context
        in_stock = ctx.in_stock
        oos = (~in_stock[batch.items]).sum(axis=1)
        frame = pd.DataFrame(
            {
                "promotion_id": promotion_id,
                "stage": stage,
                "step": step,
                "request_id": ctx.request_id.astype(np.int64),
                "t": ctx.t.astype(float),
                "user_id": ctx.user_id.astype(np.int64),
                "user_segment": ctx.user_segment.astype(int),
                "device": ctx.device.astype(int),
                "hour": ctx.hour.astype(int),
                "arm": batch.arm.astype(int),
                "model_version": np.where(batch.arm == 1, versions[1] or "", versions[0] or ""),
                "latency_ms": batch.latency_ms.astype(float),
                "error": batch.error.astype(bool),
                "items": [json.dumps(row) for row in batch.items.tolist()],
                "n_clicks": batch.clicks.sum(axis=1).astype(int),
                "n_purchases": batch.purchases.sum(axis=1).astype(int),
                "revenue": batch.revenue.astype(float),
                "n_out_of_stock": oos.astype(int),
                "min_pscore": batch.pscore.min(axis=1).astype(float),
            }
        )
        if batch.shadow_items is not None:
            frame["shadow_items"] = [json.dumps(row) for row in batch.shadow_items.tolist()]
            frame["shadow_n_out_of_stock"] = (~in_stock[batch.shadow_items]).sum(axis=1).astype(int)
            shadow_latency = getattr(batch, "shadow_latency_ms", None)
            if shadow_latency is not None:
                frame["shadow_latency_ms"] = np.asarray(shadow_latency, dtype=float)
        with self.engine.begin() as conn:
            conn.execute(insert(events), frame.to_dict(orient="records"))
        return len(frame)

    def load_events(self, promotion_id: str, stage: str, step: int | None = None) -> pd.DataFrame:
        query = select(events).where(events.c.promotion_id == promotion_id, events.c.stage == stage)
        if step is not None:
            query = query.where(events.c.step == step)
        with self.engine.connect() as conn:
            return pd.read_sql(query, conn)

    # -- promotion ledger --------------------------------------------------------------------------------
    def open_promotion(
        self,
        *,
        model: str,
        version: str,
        policy_path: str,
        policy: Mapping[str, Any],
        champion_version: str | None,
        flow_run_id: str | None = None,
    ) -> str:
        promotion_id = str(uuid.uuid4())
        now = _now()
        with self.engine.begin() as conn:
            conn.execute(
                insert(promotions).values(
                    id=promotion_id,
                    model=model,
                    version=version,
                    policy_path=policy_path,
                    policy=dict(policy),
                    state="registered",
                    stage=None,
                    champion_version=champion_version,
                    flow_run_id=flow_run_id,
                    started_at=now,
                    updated_at=now,
                )
            )
            conn.execute(
                insert(transitions).values(
                    promotion_id=promotion_id,
                    from_state=None,
                    to_state="registered",
                    reason="promotion opened",
                    at=now,
                )
            )
        return promotion_id

    def set_mlflow_run(self, promotion_id: str, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(promotions).where(promotions.c.id == promotion_id).values(mlflow_run_id=run_id)
            )

    def transition(self, promotion_id: str, to_state: str, reason: str, stage: str | None = None) -> None:
        """Record a state change; refuses to move a promotion that has already ended."""
        now = _now()
        with self.engine.begin() as conn:
            current = conn.execute(
                select(promotions.c.state).where(promotions.c.id == promotion_id)
            ).scalar_one()
            if current in TERMINAL_STATES:
                raise RuntimeError(
                    f"promotion {promotion_id} already ended as {current}; cannot move to {to_state}"
                )
            values: dict[str, Any] = {"state": to_state, "reason": reason, "updated_at": now}
            if stage is not None:
                values["stage"] = stage
            conn.execute(update(promotions).where(promotions.c.id == promotion_id).values(**values))
            conn.execute(
                insert(transitions).values(
                    promotion_id=promotion_id, from_state=current, to_state=to_state, reason=reason, at=now
                )
            )

    def record_verdicts(
        self, promotion_id: str, stage: str, step: int, look: int, rows: Iterable[tuple[Any, str | None]]
    ) -> None:
        """Persist (verdict, action) pairs for one look."""
        now = _now()
        records = [
            {
                "promotion_id": promotion_id,
                "stage": stage,
                "step": step,
                "look": look,
                "gate": v.gate,
                "metric": v.metric,
                "outcome": v.outcome.value,
                "action": action,
                "statistic": _finite(v.statistic),
                "threshold": _finite(v.threshold),
                "ci_low": _finite(v.ci_low),
                "ci_high": _finite(v.ci_high),
                "n": int(v.n),
                "message": v.message,
                "at": now,
            }
            for v, action in rows
        ]
        if records:
            with self.engine.begin() as conn:
                conn.execute(insert(verdicts), records)

    def promotion(self, promotion_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(promotions).where(promotions.c.id == promotion_id))
                .mappings()
                .one_or_none()
            )
        if row is None:
            raise KeyError(f"no promotion {promotion_id!r}")
        return dict(row)

    def promotions(self, model: str | None = None, open_only: bool = False) -> list[dict[str, Any]]:
        query = select(promotions).order_by(promotions.c.started_at)
        if model:
            query = query.where(promotions.c.model == model)
        if open_only:
            query = query.where(promotions.c.state.not_in(TERMINAL_STATES))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def transitions(self, promotion_id: str) -> list[dict[str, Any]]:
        query = (
            select(transitions).where(transitions.c.promotion_id == promotion_id).order_by(transitions.c.id)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def verdicts(self, promotion_id: str, stage: str | None = None) -> pd.DataFrame:
        query = select(verdicts).where(verdicts.c.promotion_id == promotion_id).order_by(verdicts.c.id)
        if stage:
            query = query.where(verdicts.c.stage == stage)
        with self.engine.connect() as conn:
            return pd.read_sql(query, conn)

    def count_events(self, promotion_id: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(events).where(events.c.promotion_id == promotion_id)
                ).scalar_one()
            )
