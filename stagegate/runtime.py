"""The services one promotion talks to, built from the workspace: registry, events, the four ports, the world.

The ports (traffic, metrics, offline data, clock; stagegate.ports) get the adapters the connections file
chooses: ``$STAGEGATE_CONNECTIONS``, else the workspace's ``connections.yaml``, else the embedded default,
which serves traffic from the simulated live world in this process.

The simulated world itself is the simulator's: ``world``, ``reload_world``, ``save_world``, ``history``,
``manifest``, ``training_log``, ``serve`` and ``check_world_state`` are forwarded to the object registered
as ``world`` in the ``stagegate.simulators`` entry-point group (simulator.host.SimulatedWorld), built with
this Runtime; this module never imports the simulator. Without it installed, those raise MissingExtension.
"""

from __future__ import annotations

from collections.abc import Iterable
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
from stagegate.ports import PORTS, Clock, MetricSource, OfflineData, Split, TrafficController
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

    def build_ports(self, ports: Iterable[str] | None = None) -> None:
        """Build the adapters of ``ports`` now (default: all four), so that an adapter that cannot start
        fails before a promotion opens, not half-way through it. The other ports are not built (a
        promotion without an offline stage never loads an offline-data adapter), but the secrets their
        configs reference are resolved now all the same (SecretUnavailable names port and field)."""
        wanted = set(PORTS if ports is None else ports)
        unknown = wanted - set(PORTS)
        if unknown:
            raise ValueError(f"unknown ports {sorted(unknown)}; the ports are {list(PORTS)}")
        for port in PORTS:
            if port in wanted:
                getattr(self, port)
            else:
                self.connections.check_secrets(port)

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
    def simulator(self) -> Any:
        """The simulated world of this workspace (entry point ``stagegate.simulators``: ``world``)."""
        from stagegate.extensions import SIMULATORS, load

        return load(SIMULATORS, "world", needed_for="the simulated world")(self)

    @property
    def manifest(self) -> dict[str, Any]:
        """The simulated world's manifest (seed, sizes, ``holdout_start_day``); WorkspaceNotReady if none."""
        return self.simulator.manifest

    @property
    def world(self) -> Any:
        """The simulated live world, loaded from the workspace; WorkspaceNotReady if there is none."""
        return self.simulator.world

    def reload_world(self) -> None:
        """Forget the in-memory world so the next use reads the state another process saved."""
        self.simulator.reload_world()

    def save_world(self) -> None:
        self.simulator.save_world()

    def check_world_state(self) -> None:
        """Refuse (StateFileRefused, naming the file and the reason) a world state file that loading would
        refuse, before anything starts: the commands exit 2 on it instead of failing a stage later. A
        workspace without a world state file (a promotion on real traffic) has nothing to check."""
        path = self.workspace.world_path
        if path.exists() or path.is_symlink():
            self.simulator.verify_state()

    @property
    def history(self) -> ServedBatch:
        """The simulated world's logged history (training log and hold-out)."""
        return self.simulator.history

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
        """The simulated world's log before the hold-out (what the simulation stage's twin is fitted on)."""
        return self.simulator.training_log()

    def ranker(self, model: str, version: str) -> Ranker:
        """Version ``version`` of ``model`` as a Ranker, loaded once by flavour (stagegate.models.loading)."""
        key = f"{model}/{version}"
        if key not in self._rankers:
            from stagegate.models.loading import load_ranker

            tags = self.registry.get_version(model, version).tags
            use_tracking(self.workspace.mlflow_uri, self.workspace.artifact_root)
            self._rankers[key] = load_ranker(f"models:/{model}/{version}", tags)
        return self._rankers[key]

    def serve(self, model: str, split: Split, hours: float) -> ServedBatch:
        """Serve ``hours`` of live traffic under ``split`` in the simulated world and persist its state."""
        return self.simulator.serve(model, split, hours)
