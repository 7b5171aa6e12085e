"""The served models: MLflow pyfunc versions loaded by alias or version, called under a timeout, their
answers checked against the ranking contract before anyone sees them.

Loading happens before the server starts (a router whose champion cannot load refuses to start) and when
the admin API names a version not loaded yet (a version that cannot load refuses the split). Predictions
run in a thread pool so the event loop never blocks on a model; a call that raises, breaks the contract
(stagegate.models.external.validate_output) or exceeds the timeout raises :class:`ModelCallError`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from stagegate.contract import PARAM_K
from stagegate.router.schemas import RecommendRequest

log = logging.getLogger("stagegate.router")


class ModelLoadError(RuntimeError):
    """A version could not be loaded from the registry (the message names model, version or alias)."""


class ModelCallError(RuntimeError):
    """A model call failed, timed out or answered outside the contract."""


@dataclass(frozen=True)
class Answer:
    item_ids: list[int]
    scores: list[float]
    latency_s: float


@dataclass
class Loaded:
    version: str
    model: Any
    accepts_k: bool


def _accepts_k(model: Any) -> bool:
    signature = getattr(getattr(model, "metadata", None), "signature", None)
    params = getattr(getattr(signature, "params", None), "params", None) or []
    return any(p.name == PARAM_K for p in params)


def request_frame(request: RecommendRequest) -> Any:
    """The contract's one-row input DataFrame for ``request`` (only the context columns it carries)."""
    import pandas as pd

    row: dict[str, Any] = {
        "request_id": [request.request_id],
        "user_id": [int(request.user_id)],
        "candidate_items": [list(request.candidate_items)],
    }
    for name, value in request.context.model_dump(exclude_none=True).items():
        row[name] = [value]
    return pd.DataFrame(row)


class ModelPool:
    """The versions of one registered model this router can serve, loaded once each."""

    def __init__(self, model: str, tracking_uri: str | None = None) -> None:
        import mlflow

        self.model = model
        self.tracking_uri = tracking_uri
        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
            mlflow.set_registry_uri(tracking_uri)
        self._client = mlflow.MlflowClient()
        self._loaded: dict[str, Loaded] = {}
        self._lock = threading.Lock()

    def resolve_alias(self, alias: str) -> str | None:
        """The version the alias points at, or None when the alias is not set."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self._client.get_model_version_by_alias(self.model, alias).version)
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc):
                return None
            raise ModelLoadError(f"model {self.model!r}: cannot read alias {alias!r}: {exc}") from exc

    def load(self, version: str) -> Loaded:
        """Version ``version``, loaded on first use (``models:/NAME/VERSION``)."""
        import mlflow
        from mlflow.exceptions import MlflowException

        with self._lock:
            if version in self._loaded:
                return self._loaded[version]
            from stagegate.contract import refuse_pickled_models

            refuse_pickled_models()  # MLflow refuses pickled models instead of running them
            try:
                model = mlflow.pyfunc.load_model(f"models:/{self.model}/{version}")
            except (MlflowException, OSError, ImportError, ValueError) as exc:
                raise ModelLoadError(f"model {self.model!r} version {version}: cannot load: {exc}") from exc
            loaded = Loaded(version, model, _accepts_k(model))
            warm_up(loaded)
            self._loaded[version] = loaded
            return loaded

    def loaded(self, version: str) -> Loaded:
        """An already loaded version (the serving path never loads)."""
        return self._loaded[version]

    @property
    def versions(self) -> list[str]:
        return sorted(self._loaded)


WARM_UP = RecommendRequest(request_id="stagegate-warm-up", user_id=0, candidate_items=[0, 1], k=1)


def warm_up(loaded: Loaded) -> None:
    """One call on a made-up request, so that the first real request does not pay for lazy imports and
    caches (it could time out). A version that fails it is still served: its failures are counted then."""
    try:
        predict_sync(loaded, WARM_UP, 1)
    except ModelCallError as exc:
        log.warning("version %s failed its warm-up call: %s", loaded.version, exc)


def predict_sync(loaded: Loaded, request: RecommendRequest, k: int) -> Answer:
    """One call of ``loaded`` on ``request``, its answer checked; ModelCallError on any failure."""
    from stagegate.models.external import RankingOutputError, validate_output

    frame = request_frame(request)
    start = time.perf_counter()
    try:
        if loaded.accepts_k:
            out = loaded.model.predict(frame, params={PARAM_K: int(k)})
        else:
            out = loaded.model.predict(frame)
        ids, scores = validate_output(out, frame, k, who=f"version {loaded.version}")
    except RankingOutputError as exc:
        raise ModelCallError(str(exc)) from exc
    except Exception as exc:  # whatever the model raises is its failure, never the router's
        raise ModelCallError(f"version {loaded.version}: predict raised {type(exc).__name__}: {exc}") from exc
    latency = time.perf_counter() - start
    return Answer([int(i) for i in ids[0][:k]], [float(s) for s in scores[0][:k]], latency)


async def predict(
    executor: ThreadPoolExecutor, loaded: Loaded, request: RecommendRequest, k: int, timeout: float
) -> Answer:
    """:func:`predict_sync` in ``executor``, abandoned after ``timeout`` seconds (ModelCallError). The
    abandoned thread finishes on its own; its answer is discarded."""
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(executor, predict_sync, loaded, request, k)
    try:
        return await asyncio.wait_for(future, timeout)
    except TimeoutError:
        raise ModelCallError(f"version {loaded.version}: no answer within {timeout:g} s") from None
