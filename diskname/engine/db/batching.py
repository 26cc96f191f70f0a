"""Calls that arrive together, run together: group commit for the engine's writes.

A burst of REST requests (a thousand hot-plugs at once) would otherwise cost a
transaction and its round trips each. :class:`Coalescer` queues each call; one
task runs whatever has queued up as one batch, and while that batch is in the
database the next one gathers. A call that arrives alone runs at once (no timer,
no added latency); under load the batches grow by themselves.

Each call keeps its own answer: the batch function returns one result *or
exception* per item, and each caller gets its own. A batch that fails as a whole
(something the set-based statements did not foresee) is run again item by item,
so one bad request cannot fail the requests it happened to arrive with.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

BatchFn = Callable[[Sequence[T]], Awaitable[Sequence[R | Exception]]]
MAX_BATCH = 500


class Coalescer(Generic[T, R]):
    def __init__(self, run: BatchFn[T, R], *, max_batch: int = MAX_BATCH) -> None:
        self._run, self._max = run, max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # batches run (a batch retried item by item counts once)

    async def submit(self, item: T) -> R:
        """Queue ``item``; its own result (or exception) once its batch has run."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="coalescer")
        return await future

    async def _drain(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue[: self._max], self._queue[self._max :]
                self.batches += 1
                await self._settle(batch)
        except BaseException:
            for _, future in batch + self._queue:  # cancelled (shutdown): nobody waits forever
                future.cancel()
            self._queue = []
            raise
        finally:
            self._task = None

    async def _settle(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            outcomes = await self._run([item for item, _ in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} gave {len(outcomes)} results")
        except Exception as exc:
            if len(batch) == 1:
                outcomes = [exc]
            else:
                log.info("a batch of %d failed (%s): retrying one by one", len(batch), exc)
                for one in batch:
                    await self._settle([one])
                return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue  # its caller gave up (cancelled); the work is done all the same
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
