"""The simulator's adapters of the offline-data and clock ports (registered in pyproject.toml).

- ``stagegate.offline_data``: ``workspace`` (:class:`WorkspaceOfflineData`): the simulated world's history,
  written once as Parquet in the port's schema and read back through the core's ParquetOfflineData.
- ``stagegate.clock``: ``simulated`` (:class:`SimulatedClock`): time is the simulated world's; waiting for
  a look serves the world up to it.

The host is the core's Runtime; what these adapters need of the world (``world``, ``serve``, ``history``,
``manifest``, ``training_log``) it reaches through the simulator's world host (simulator.host).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from stagegate.adapters.offline import ParquetOfflineData, catalogue_table, impressions_table
from stagegate.ports import SIM_EPOCH, Look, Wait, check_table

# Below this the world is "at" the due time: hours accumulate in floating point.
_EPS_HOURS = 1e-9


class SimulatedClock:
    """Time is the simulated world's; waiting for a look serves the world up to the look's due time.

    Serving goes through the host (the Runtime): the current split from the traffic port, the rankers from
    the registry, and the served requests are appended to the event store under the look's promotion,
    stage and step, which is exactly what a real router's logs would deliver while real time passes.
    """

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def __init__(self, host: Any) -> None:
        self.host = host

    @classmethod
    def from_config(cls, config: Config, host: Any) -> SimulatedClock:
        return cls(host)

    def now(self) -> datetime:
        return SIM_EPOCH + timedelta(days=float(self.host.world.now))

    def wait(self, look: Look) -> Wait:
        hours = (look.due - self.now()) / timedelta(hours=1)
        if hours <= _EPS_HOURS:
            return Wait(ready=True, due=look.due)
        self.advance(look.promotion_id, look.stage, look.step, hours)
        return Wait(ready=True, due=look.due, waited=timedelta(hours=hours))

    def advance(
        self, promotion_id: str, stage: str, step: int, hours: float, model: str | None = None
    ) -> Any:
        """Serve ``hours`` under the current split and record the requests; returns the served batch."""
        host = self.host
        model = model or host.events.promotion(promotion_id)["model"]
        split = host.traffic.get_split()
        batch = host.serve(model, split, hours)
        host.events.append_batch(
            batch,
            promotion_id=promotion_id,
            stage=stage,
            step=step,
            versions=(split.champion, split.candidate),
        )
        return batch


class WorkspaceOfflineData:
    """The simulator's history split at the workspace manifest's ``holdout_start_day``, written once as
    Parquet in ``<workspace>/offline/`` and read back through :class:`ParquetOfflineData`.

    The catalogue is the world's public catalogue *now* (its stock moves as the world serves), so it is
    rewritten on every call; the impressions are the fixed pre-promotion history.
    """

    FOLDER = "offline"

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def __init__(self, host: Any) -> None:
        self.host = host

    @classmethod
    def from_config(cls, config: Config, host: Any) -> WorkspaceOfflineData:
        return cls(host)

    @property
    def folder(self) -> Path | None:
        """Where the Parquet files go; None for a host without a workspace (a test double): in memory."""
        workspace = getattr(self.host, "workspace", None)
        return Path(workspace.root) / self.FOLDER if workspace is not None else None

    def _tables(self) -> dict[str, Any]:
        from stagegate.log_rows import take

        def holdout() -> pa.Table:
            history = self.host.history
            cut = float(self.host.manifest["holdout_start_day"])
            return impressions_table(take(history, np.flatnonzero(history.context.t >= cut)))

        return {
            "holdout": holdout,
            "training_log": lambda: impressions_table(self.host.training_log()),
            "catalogue": lambda: catalogue_table(self.host.world.catalog_public()),
        }

    def _location(self, name: str, make: Any, always: bool) -> str:
        """The Parquet file of ``name``, written from the simulator if missing (or if ``always``)."""
        assert self.folder is not None
        path = self.folder / f"{name}.parquet"
        if always or not path.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.{id(self)}.tmp")  # atomic: no reader sees half a file
            pq.write_table(make(), tmp)
            tmp.replace(path)
        return str(path)

    def _get(self, name: str) -> pa.Table:
        makers = self._tables()
        if self.folder is None:
            reader: Any = _InMemory({k: make() for k, make in makers.items()})
        else:
            # the catalogue's stock moves as the world serves: rewrite it whenever it is asked for
            fresh = {"catalogue"} if name == "catalogue" else set()
            locations = {k: self._location(k, make, always=k in fresh) for k, make in makers.items()}
            reader = ParquetOfflineData(ParquetOfflineData.Config(**locations))
        return getattr(reader, name)()

    def holdout(self) -> pa.Table:
        return self._get("holdout")

    def training_log(self) -> pa.Table:
        return self._get("training_log")

    def catalogue(self) -> pa.Table:
        return self._get("catalogue")


class _InMemory(ParquetOfflineData):
    """ParquetOfflineData's checks over tables already in memory."""

    def __init__(self, tables: dict[str, pa.Table]) -> None:
        super().__init__(
            ParquetOfflineData.Config(holdout="<memory>", training_log="<memory>", catalogue="<memory>")
        )
        self._given = tables

    def _read(self, name: str, schema: pa.Schema, extra_prefix: str | None = None) -> pa.Table:
        return check_table(self._given[name], schema, name, extra_prefix=extra_prefix)
