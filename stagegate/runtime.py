"""The services one promotion talks to, built from the workspace: registry, traffic, events, the world.

The embedded default serves traffic from the simulated live world in this process; the world's state is
pickled in the workspace after every served window so that the next process continues the same world.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from stagegate.events.store import EventStore
from stagegate.models.base import Ranker
from stagegate.models.replay import ReplayRanker
from stagegate.registry import Registry
from stagegate.tracking import PromotionTracker
from stagegate.traffic import FileTrafficController, Split
from stagegate.workspace import Workspace
from stagegate.world.schema import ServedBatch


class WorkspaceNotReady(RuntimeError):
    """The workspace has no world or history yet (run `stagegate world init` or `stagegate demo`)."""


@dataclass
class Runtime:
    workspace: Workspace
    _rankers: dict[str, Ranker] = field(default_factory=dict)
    _holdout: list[ServedBatch] | None = None
    _holdout_slates: dict[str, ReplayRanker] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> Runtime:
        return cls(Workspace.from_env())

    @cached_property
    def registry(self) -> Registry:
        return Registry(self.workspace.mlflow_uri)

    @cached_property
    def traffic(self) -> FileTrafficController:
        return FileTrafficController(self.workspace.traffic_path)

    @cached_property
    def events(self) -> EventStore:
        return EventStore(self.workspace.events_url)

    def tracker(self, model: str) -> PromotionTracker:
        return PromotionTracker(self.workspace.mlflow_uri, model, self.workspace.artifact_root)

    @cached_property
    def manifest(self) -> dict[str, Any]:
        if not self.workspace.manifest_path.exists():
            raise WorkspaceNotReady(f"no world in {self.workspace.root}: run `stagegate world init` first")
        return json.loads(self.workspace.manifest_path.read_text(encoding="utf-8"))

    @cached_property
    def world(self) -> Any:
        if not self.workspace.world_path.exists():
            raise WorkspaceNotReady(f"no world state at {self.workspace.world_path}")
        with self.workspace.world_path.open("rb") as fh:
            return pickle.load(fh)

    def reload_world(self) -> None:
        """Forget the in-memory world so the next use reads the state another process saved."""
        self.__dict__.pop("world", None)

    def save_world(self) -> None:
        tmp = self.workspace.world_path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            pickle.dump(self.world, fh, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(self.workspace.world_path)

    @cached_property
    def history(self) -> ServedBatch:
        from stagegate.datasets import load_batch

        return load_batch(self.workspace.history_path)

    def holdout(self) -> list[ServedBatch]:
        """The logged requests after the training cut-off (the offline and simulation stages' data), in
        groups that carry the stock and item ages *at serving time*, not the log's last snapshot."""
        if self._holdout is None:
            from stagegate.world.batch import serving_batches, take

            rows = np.flatnonzero(self.history.context.t >= float(self.manifest["holdout_start_day"]))
            publish_day = self.world.catalog_public().sort_values("item_id")["publish_day"].to_numpy(float)
            self._holdout = serving_batches(take(self.history, rows), publish_day)
        return self._holdout

    def holdout_ranker(self, model: str, version: str) -> ReplayRanker:
        """Version ``version``'s slates for every hold-out request, ranked once and then replayed."""
        key = f"{model}/{version}"
        if key not in self._holdout_slates:
            from stagegate.evaluation.ope import target_slates

            batches = self.holdout()
            slates = target_slates(self.ranker(model, version), batches)
            ids = np.concatenate([b.context.request_id for b in batches])
            self._holdout_slates[key] = ReplayRanker(f"{key} (replayed)", ids, slates)
        return self._holdout_slates[key]

    def training_log(self) -> ServedBatch:
        from stagegate.world import take

        return take(
            self.history, np.flatnonzero(self.history.context.t < float(self.manifest["holdout_start_day"]))
        )

    def ranker(self, model: str, version: str) -> Ranker:
        key = f"{model}/{version}"
        if key not in self._rankers:
            from stagegate.models.pyfunc import load_ranker
            from stagegate.setup import use_tracking

            use_tracking(self.workspace.mlflow_uri, self.workspace.artifact_root)
            self._rankers[key] = load_ranker(f"models:/{model}/{version}")
        return self._rankers[key]

    def serve(self, model: str, split: Split, hours: float) -> ServedBatch:
        """Serve ``hours`` of live traffic under ``split`` and persist the world's new state."""
        if split.champion is None:
            raise RuntimeError("no champion is serving: refusing to serve traffic")
        champion = self.ranker(model, split.champion)
        candidate = self.ranker(model, split.candidate) if split.candidate else None
        batch = self.world.serve(
            champion,
            candidate=candidate if split.candidate_weight > 0 else None,
            candidate_share=split.candidate_weight if candidate is not None else 0.0,
            hours=hours,
            shadow=candidate if split.shadow else None,
        )
        self.save_world()
        return batch
