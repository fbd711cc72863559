"""Dynamic batching: concurrent requests' images run through the model together."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from serve.limits import worker_pool

log = logging.getLogger(__name__)


def run_together(predict: Callable[[np.ndarray], np.ndarray], batches: list[np.ndarray]) -> list[np.ndarray]:
    """One model run over several requests' batches; each gets its own rows back, in order."""
    together = predict(np.concatenate(batches)) if len(batches) > 1 else predict(batches[0])
    bounds = np.cumsum([0] + [len(b) for b in batches])
    return [together[start:end] for start, end in itertools.pairwise(bounds)]


@dataclass
class _Job:
    batch: np.ndarray
    future: asyncio.Future


class Batcher:
    """Collects requests for up to ``max_delay`` seconds or ``max_images`` images, then predicts once; it stops
    waiting early when ``coming()`` says no other request is on its way (a lone client pays no batching delay).

    A request larger than ``max_images`` runs on its own; results keep each request's order. The queue holds no
    more than the images the server admitted (``serve.limits.Admission``).
    """

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        max_images: int,
        max_delay: float,
        observe: Callable[[int], None],
        coming: Callable[[], bool],
    ):
        self.predict = predict
        self.coming = coming
        self.max_images = max_images
        self.max_delay = max_delay
        self.observe = observe
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.carry: _Job | None = None  # the job that did not fit into the last batch goes first next time
        self.executor = worker_pool(1, "predict")  # one model run at a time, off the event loop

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, batch: np.ndarray) -> np.ndarray:
        job = _Job(batch, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.future

    async def _collect(self) -> list[_Job]:
        jobs = [self.carry or await self.queue.get()]
        self.carry = None
        size = len(jobs[0].batch)
        deadline = asyncio.get_running_loop().time() + self.max_delay
        while size < self.max_images:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                waiting = remaining > 0 and (not self.queue.empty() or self.coming())
                job = await asyncio.wait_for(self.queue.get(), remaining) if waiting else self.queue.get_nowait()
            except (TimeoutError, asyncio.QueueEmpty):
                break
            if size + len(job.batch) > self.max_images:
                self.carry = job
                break
            jobs.append(job)
            size += len(job.batch)
        return jobs

    async def _run_jobs(self, jobs: list[_Job]) -> None:
        jobs = [j for j in jobs if not j.future.done()]  # a request that timed out is not worth computing
        if not jobs:
            return
        self.observe(sum(len(j.batch) for j in jobs))
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self.executor, run_together, self.predict, [j.batch for j in jobs]
            )
        except Exception as exc:
            results = [exc] * len(jobs)
        for job, result in zip(jobs, results, strict=False):
            if job.future.done():
                continue
            if isinstance(result, Exception):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

    async def _run(self) -> None:
        while True:
            await self._run_jobs(await self._collect())
