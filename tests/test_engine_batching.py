"""The group-commit helper without a database: who shares a batch, who gets which answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from diskname.engine.db.batching import Coalescer


class Recorder:
    def __init__(self, fail_whole: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.fail_whole = fail_whole
        self.gate = asyncio.Event()
        self.gate.set()

    async def run(self, items: Sequence[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        await self.gate.wait()
        if self.fail_whole and len(items) > 1:
            raise RuntimeError("the statement did not foresee this mix")
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


async def test_calls_made_together_share_one_batch_and_keep_their_own_answers() -> None:
    recorder = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(recorder.run)
    results = await asyncio.gather(
        *(coalescer.submit(i) for i in (1, -2, 3)), return_exceptions=True
    )
    assert recorder.batches == [[1, -2, 3]]
    assert results[0] == 10 and results[2] == 30
    assert isinstance(results[1], ValueError) and str(results[1]) == "bad -2"


async def test_a_call_alone_runs_at_once_and_later_calls_gather_behind_a_running_batch() -> None:
    recorder = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(recorder.run)
    assert await coalescer.submit(1) == 10
    recorder.gate.clear()
    first = asyncio.ensure_future(coalescer.submit(2))
    await asyncio.sleep(0)  # sync-ok: let the batch of [2] start and block on the gate
    later = [asyncio.ensure_future(coalescer.submit(i)) for i in (3, 4, 5)]
    await asyncio.sleep(0)  # sync-ok: they queue while [2] is in the database
    recorder.gate.set()
    assert await first == 20 and [await f for f in later] == [30, 40, 50]
    assert recorder.batches == [[1], [2], [3, 4, 5]]
    assert coalescer.batches == 3


async def test_a_batch_that_fails_whole_is_retried_one_by_one() -> None:
    recorder = Recorder(fail_whole=True)
    coalescer: Coalescer[int, int] = Coalescer(recorder.run)
    results = await asyncio.gather(*(coalescer.submit(i) for i in (1, -2)), return_exceptions=True)
    assert recorder.batches == [[1, -2], [1], [-2]]
    assert results[0] == 10 and isinstance(results[1], ValueError)


async def test_batches_are_capped_and_a_cancelled_caller_does_not_stop_the_others() -> None:
    recorder = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(recorder.run, max_batch=2)
    recorder.gate.clear()
    futures = [asyncio.ensure_future(coalescer.submit(i)) for i in range(5)]
    await asyncio.sleep(0)  # sync-ok: all five queued, the first batch waits on the gate
    futures[1].cancel()
    recorder.gate.set()
    assert [await futures[i] for i in (0, 2, 3, 4)] == [0, 20, 30, 40]
    with pytest.raises(asyncio.CancelledError):
        await futures[1]
    assert recorder.batches == [[0, 1], [2, 3], [4]]
