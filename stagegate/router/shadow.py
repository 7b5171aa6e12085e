"""Shadow traffic: mirrored requests answered by the candidate off the response path.

The serving path only *offers* a request (``put_nowait`` on a bounded asyncio queue) and never awaits the
candidate: when the queue is full the mirror is dropped and counted in ``stagegate_shadow_dropped_total``,
so overload costs shadow coverage, never response time or content. Workers call the candidate in their own
thread pool (separate from the serving one, so a slow candidate cannot take the champion's threads) under
the same timeout, and record the answer, error and latency as an ``arm="shadow"`` row.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from stagegate.router.metrics import RouterMetrics
from stagegate.router.models import Loaded, ModelCallError, predict
from stagegate.router.recorder import Recorder, RequestRecord, now
from stagegate.router.schemas import RecommendRequest


@dataclass(frozen=True)
class _Job:
    loaded: Loaded
    request: RecommendRequest
    k: int


class ShadowMirror:
    def __init__(
        self, metrics: RouterMetrics, recorder: Recorder, queue_size: int, workers: int, timeout: float
    ) -> None:
        self.metrics = metrics
        self.recorder = recorder
        self.timeout = timeout
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=queue_size)
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="router-shadow")
        self._tasks = [asyncio.create_task(self._work(), name=f"shadow-{i}") for i in range(workers)]

    def offer(self, loaded: Loaded, request: RecommendRequest, k: int) -> bool:
        """Queue a mirror of ``request`` to ``loaded``; False (and counted) if the queue is full."""
        try:
            self.queue.put_nowait(_Job(loaded, request, k))
        except asyncio.QueueFull:
            self.metrics.shadow_dropped.inc()
            return False
        return True

    async def _work(self) -> None:
        while True:
            job = await self.queue.get()
            try:
                await self._answer(job)
            finally:
                self.queue.task_done()

    async def _answer(self, job: _Job) -> None:
        start = asyncio.get_running_loop().time()
        error: str | None = None
        items: list[int] = []
        try:
            answer = await predict(self.executor, job.loaded, job.request, job.k, self.timeout)
            items, latency = answer.item_ids, answer.latency_s
        except ModelCallError as exc:
            error, latency = str(exc), asyncio.get_running_loop().time() - start
            self.metrics.errors.labels(arm="shadow").inc()
        self.metrics.requests.labels(arm="shadow").inc()
        self.metrics.latency.labels(arm="shadow").observe(latency)
        self.recorder.record(
            RequestRecord(
                request_id=job.request.request_id,
                ts=now(),
                user_id=job.request.user_id,
                arm="shadow",
                version=job.loaded.version,
                served_version=None,
                latency_ms=latency * 1000.0,
                error=error,
                fallback=False,
                items=items,
            )
        )

    async def close(self, drain_seconds: float = 5.0) -> None:
        """Answer what is queued (up to ``drain_seconds``), then stop the workers."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), drain_seconds)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.executor.shutdown(wait=False, cancel_futures=True)
