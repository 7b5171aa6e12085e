"""The router's ASGI app (Starlette) and the serving path.

``POST /recommend`` takes a :class:`~stagegate.router.schemas.RecommendRequest`, picks the user's arm by
the stable hash (stagegate.router.split), asks that arm's model under the timeout and answers with the
ranked items, their scores and who served. A candidate that fails, times out or breaks the contract is
answered for by the champion (``fallback: true``) and counted as an error of the candidate; a champion that
fails is a 503. A champion-served request chosen for shadow is offered to the mirror queue after the
answer is computed and never awaited. Every answer is queued to the request log.

:func:`build_router` does everything that can fail before the server starts (token, registry, models,
persisted split), so a router that cannot serve refuses to start with a clear message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stagegate.ports import Split, TrafficError
from stagegate.router import admin
from stagegate.router.config import RouterConfig
from stagegate.router.metrics import RouterMetrics
from stagegate.router.models import Answer, ModelCallError, ModelLoadError, ModelPool, predict
from stagegate.router.recorder import Recorder, RequestRecord, now
from stagegate.router.schemas import RecommendRequest, RecommendResponse
from stagegate.router.shadow import ShadowMirror
from stagegate.router.split import SplitStore, assign, mirrored
from stagegate.router.web import HTTPProblem, parse, read_body

log = logging.getLogger("stagegate.router")


class RouterStartError(RuntimeError):
    """The router cannot serve (no champion, a version that does not load, an unreadable split)."""


class Router:
    """The state of one router process: the models, the split in force, the metrics, the queues."""

    def __init__(
        self,
        config: RouterConfig,
        token: str,
        pool: ModelPool,
        store: SplitStore,
        default_champion: str,
        split: Split,
    ) -> None:
        self.config = config
        self.token = token
        self.pool = pool
        self.store = store
        self.default_champion = default_champion
        self.split = split
        self.metrics = RouterMetrics()
        self.recorder: Recorder | None = None
        self.shadow: ShadowMirror | None = None
        # the champion and the candidate each have their own threads: calls abandoned at the timeout keep
        # their thread until the model returns, and a hanging candidate must not starve the champion
        self.executor = ThreadPoolExecutor(config.serving_threads, thread_name_prefix="router-champion")
        self.candidate_executor = ThreadPoolExecutor(
            config.serving_threads, thread_name_prefix="router-candidate"
        )
        self._admin_lock = asyncio.Lock()

    # -- the split -------------------------------------------------------------------------------------

    @property
    def champion_version(self) -> str:
        return self.split.champion or self.default_champion

    async def apply(self, split: Split) -> None:
        """Make ``split`` the one in force: load the versions it names, persist it, then swap. Raises
        HTTPProblem (409 a version does not load, 503 not persisted) with nothing changed."""
        async with self._admin_lock:
            for version in (split.champion, split.candidate):
                if version is not None:
                    try:
                        await asyncio.to_thread(self.pool.load, version)
                    except ModelLoadError as exc:
                        raise HTTPProblem(409, str(exc)) from None
            try:
                await asyncio.to_thread(self.store.save, split)
            except TrafficError as exc:
                raise HTTPProblem(503, str(exc)) from None
            self.split = split
            log.info("split now %s", split.model_dump())

    async def rollback(self, champion: str | None) -> None:
        """All traffic to ``champion`` (default: the current champion), shadow off."""
        await self.apply(Split(champion=champion if champion is not None else self.split.champion))

    # -- serving ---------------------------------------------------------------------------------------

    def _record(
        self,
        request: RecommendRequest,
        arm: str,
        version: str,
        served: str | None,
        latency_s: float,
        error: str | None,
        fallback: bool,
        items: list[int],
    ) -> None:
        assert self.recorder is not None
        self.recorder.record(
            RequestRecord(
                request.request_id,
                now(),
                request.user_id,
                arm,
                version,
                served,
                latency_s * 1000.0,
                error,
                fallback,
                items,
            )
        )

    async def recommend(self, request: RecommendRequest) -> RecommendResponse:
        split = self.split  # one snapshot per request: an admin swap mid-request does not mix splits
        k = min(request.k, len(set(request.candidate_items)), self.config.max_k)
        arm = assign(split, request.user_id)
        champion = self.pool.loaded(split.champion or self.default_champion)
        timeout = self.config.timeout_seconds
        start = time.perf_counter()
        answer: Answer | None = None
        error: str | None = None
        version = champion.version
        if arm == "candidate":
            assert split.candidate is not None
            candidate = self.pool.loaded(split.candidate)
            version = candidate.version
            try:
                answer = await predict(self.candidate_executor, candidate, request, k, timeout)
            except ModelCallError as exc:
                error = str(exc)
                self.metrics.errors.labels(arm="candidate").inc()
        served = version if answer is not None else champion.version
        if answer is None:
            try:
                answer = await predict(self.executor, champion, request, k, timeout)
            except ModelCallError as exc:
                latency = time.perf_counter() - start
                self.metrics.requests.labels(arm=arm).inc()
                self.metrics.errors.labels(arm="champion").inc()
                self.metrics.latency.labels(arm=arm).observe(latency)
                self._record(
                    request,
                    arm,
                    version,
                    None,
                    latency,
                    f"{error}; {exc}" if error else str(exc),
                    error is not None,
                    [],
                )
                raise HTTPProblem(503, f"no model could answer request {request.request_id}") from None
        latency = time.perf_counter() - start
        self.metrics.requests.labels(arm=arm).inc()
        self.metrics.latency.labels(arm=arm).observe(latency)
        fallback = error is not None
        self._record(request, arm, version, served, latency, error, fallback, answer.item_ids)
        if (
            arm == "champion"
            and split.candidate is not None
            and self.shadow is not None
            and mirrored(split, request.request_id, self.config.shadow_share)
        ):
            self.shadow.offer(self.pool.loaded(split.candidate), request, k)
        return RecommendResponse(
            request_id=request.request_id,
            arm=arm,
            version=version,
            served_by=served,
            fallback=fallback,
            item_ids=answer.item_ids,
            scores=answer.scores,
        )

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.recorder = await asyncio.to_thread(Recorder, self.config.events_url, self.metrics)
        self.shadow = ShadowMirror(
            self.metrics,
            self.recorder,
            self.config.queue_size,
            self.config.shadow_workers,
            self.config.timeout_seconds,
        )

    async def stop(self) -> None:
        """Answer queued shadow work, flush the request log, release the pools."""
        if self.shadow is not None:
            await self.shadow.close()
        if self.recorder is not None:
            await asyncio.to_thread(self.recorder.close)
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.candidate_executor.shutdown(wait=False, cancel_futures=True)
        self.store.close()


def build_router(config: RouterConfig, token: str) -> Router:
    """Load everything the router needs, or raise RouterStartError saying what is missing.

    The split in force is the persisted one (sticky across restarts) or, the first time, all traffic to
    the ``champion`` alias. The ``champion`` alias must exist; the ``candidate`` alias's version is loaded
    too when set, so that a split naming it takes effect without a load."""
    pool = ModelPool(config.model, config.tracking_uri)
    try:
        champion = pool.resolve_alias("champion")
        if champion is None:
            raise RouterStartError(f"model {config.model!r} has no 'champion' alias: nothing to serve")
        candidate = pool.resolve_alias("candidate")
        store = SplitStore(config.state)
        split = store.load()
        if split is None:
            split = Split(champion=champion)
            store.save(split)
        for version in {champion, candidate, split.champion, split.candidate} - {None}:
            pool.load(version)
    except (ModelLoadError, TrafficError) as exc:
        raise RouterStartError(str(exc)) from exc
    return Router(config, token, pool, store, champion, split)


async def _recommend(request: Request) -> Response:
    router: Router = request.app.state.router
    try:
        body = await read_body(request, router.config.max_body_bytes)
        asked = parse(body, RecommendRequest)
        answer = await router.recommend(asked)
    except HTTPProblem as problem:
        return problem.response()
    return Response(answer.model_dump_json(), media_type="application/json")


async def _healthz(request: Request) -> Response:
    router: Router = request.app.state.router
    split = router.split
    return JSONResponse(
        {
            "status": "ok",
            "model": router.config.model,
            "champion": router.champion_version,
            "candidate": split.candidate,
            "loaded": router.pool.versions,
        }
    )


async def _metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(request.app.state.router.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def create_app(router: Router) -> Starlette:
    """The ASGI app over a built router; its lifespan starts and flushes the background workers."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await router.start()
        try:
            yield
        finally:
            await router.stop()

    app = Starlette(
        routes=[
            Route("/recommend", _recommend, methods=["POST"]),
            Route("/healthz", _healthz, methods=["GET"]),
            Route("/metrics", _metrics, methods=["GET"]),
            Route("/admin/split", admin.get_split, methods=["GET"]),
            Route("/admin/split", admin.put_split, methods=["PUT"]),
            Route("/admin/rollback", admin.rollback, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.router = router
    return app
