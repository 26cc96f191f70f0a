"""``asyncio.timeout`` and ``asyncio.TaskGroup`` for Python 3.9 and 3.10.

On 3.11+ these are the standard ones. The stand-ins keep to what diskname
uses: ``async with timeout(seconds)`` raising the built-in TimeoutError, and a
TaskGroup that cancels its other tasks when one fails and then raises that
first error itself (3.9 has no ExceptionGroup). Without ``Task.uncancel``
(3.11) a cancellation from outside that lands in the same loop iteration as
the deadline is taken for the deadline; the guest agent, their only user,
shuts down by cancelling its whole task and is restarted by systemd anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Coroutine
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")


@contextlib.asynccontextmanager
async def backport_timeout(delay: float | None) -> AsyncIterator[None]:
    """Cancel the block after ``delay`` seconds and raise TimeoutError."""
    if delay is None:
        yield
        return
    task = asyncio.current_task()
    assert task is not None, "timeout() outside a task"
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    handle = asyncio.get_running_loop().call_later(max(delay, 0.0), expire)
    try:
        yield
    except asyncio.CancelledError:
        if expired:
            raise TimeoutError from None
        raise
    finally:
        handle.cancel()


class BackportTaskGroup:
    """The part of ``asyncio.TaskGroup`` diskname uses."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._errors: list[BaseException] = []
        self._parent: asyncio.Task[Any] | None = None
        self._cancelled_parent = False  # once, for the first failed child
        self._cancel_pending = False  # that cancellation, until the body sees it

    async def __aenter__(self) -> BackportTaskGroup:
        self._parent = asyncio.current_task()
        return self

    def create_task(
        self, coro: Coroutine[Any, Any, T], *, name: str | None = None
    ) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        self._errors.append(task.exception())  # type: ignore[arg-type]
        self._abort()
        if self._parent is not None and not self._cancelled_parent:
            self._cancelled_parent = self._cancel_pending = True
            self._parent.cancel()

    def _own_cancel(self) -> bool:
        """Whether a CancelledError just seen is the one we sent the body."""
        mine, self._cancel_pending = self._cancel_pending, False
        return mine

    def _abort(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is not None:
            self._abort()
        outside = isinstance(exc, asyncio.CancelledError) and not self._own_cancel()
        while self._tasks:
            try:
                await asyncio.wait(set(self._tasks))
            except asyncio.CancelledError:
                outside = outside or not self._own_cancel()
                self._abort()
        if self._errors:
            raise self._errors[0]
        if outside:
            raise asyncio.CancelledError
        return False


# The standard ones wherever they exist; the stand-ins are tested on 3.11 too.
if sys.version_info >= (3, 11):
    from asyncio import TaskGroup, timeout  # novermin (3.11+ only)
else:
    TaskGroup, timeout = BackportTaskGroup, backport_timeout


__all__ = ["TaskGroup", "timeout"]
