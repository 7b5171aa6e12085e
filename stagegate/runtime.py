"""The services one promotion talks to, built from the workspace: registry, events, the four ports, the world.

The ports (traffic, metrics, offline data, clock; stagegate.ports) get the adapters the connections file
chooses: ``$STAGEGATE_CONNECTIONS``, else the workspace's ``connections.yaml``, else the embedded default,
which serves traffic from the simulated live world in this process; the world's state is pickled in the
workspace after every served window so that the next process continues the same world.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from stagegate.connections import Connections, resolve_connections
from stagegate.events.store import EventStore
from stagegate.logs import ServedBatch
from stagegate.models.base import Ranker
from stagegate.models.replay import ReplayRanker
from stagegate.ports import Clock, MetricSource, OfflineData, Split, TrafficController
from stagegate.registry import Registry
from stagegate.tracking import PromotionTracker
from stagegate.workspace import Workspace


class WorkspaceNotReady(RuntimeError):
    """The workspace has no world or history yet (run `stagegate world init` or `stagegate demo`)."""


def use_tracking(uri: str, artifact_root: Path) -> str:
    """Point MLflow's fluent API at ``uri``; returns the id of the experiment that holds model artifacts."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    name = "stagegate-models"
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        # A tracking server decides where artifacts go (e.g. S3); only a local store needs a folder here.
        local = not uri.startswith(("http://", "https://"))
        return mlflow.create_experiment(name, artifact_location=artifact_root.as_uri() if local else None)
    return experiment.experiment_id


@dataclass
class Runtime:
    workspace: Workspace
    _rankers: dict[str, Ranker] = field(default_factory=dict)
    _holdout: list[ServedBatch] | None = None
    _holdout_slates: dict[str, ReplayRanker] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> Runtime:
        """The runtime of ``$STAGEGATE_HOME``; a connections file that does not validate fails here, before
        anything can move (ConnectionsError: file, field, reason)."""
        runtime = cls(Workspace.from_env())
        runtime.connections  # noqa: B018 -- validate now, not at the first traffic move
        return runtime

    def build_ports(self) -> None:
        """Build every port's adapter now (resolving secrets), so that a missing secret or an adapter that
        cannot start fails before a promotion opens, not half-way through it."""
        for port in ("traffic", "metrics", "offline_data", "clock"):
            getattr(self, port)

    @cached_property
    def registry(self) -> Registry:
        return Registry(self.workspace.mlflow_uri)

    @cached_property
    def connections(self) -> Connections:
        """The adapters in force; ConnectionsError (file, field, reason) if the file does not validate."""
        return resolve_connections(self.workspace.root)

    @cached_property
    def traffic(self) -> TrafficController:
        return self.connections.build("traffic", self)

    @cached_property
    def metrics(self) -> MetricSource:
        return self.connections.build("metrics", self)

    @cached_property
    def offline_data(self) -> OfflineData:
        return self.connections.build("offline_data", self)

    @cached_property
    def clock(self) -> Clock:
        return self.connections.build("clock", self)

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
        if self._holdout is None:  # through the OfflineData port: the workspace's Parquet or your own
            from stagegate.evaluation.logs import holdout_batches

            data = self.offline_data
            self._holdout = holdout_batches(data.holdout(), data.catalogue())
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
        from simulator.world import take

        return take(
            self.history, np.flatnonzero(self.history.context.t < float(self.manifest["holdout_start_day"]))
        )

    def ranker(self, model: str, version: str) -> Ranker:
        key = f"{model}/{version}"
        if key not in self._rankers:
            from simulator.models.pyfunc import load_ranker

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
