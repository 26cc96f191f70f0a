"""libvirt's blocking calls kept off the event loop, and its events put on it.

Every libvirt call blocks (a virtio unplug can take seconds), so each runs in
a small thread pool of the backend's own and never holds up the loop, polls
or other VMs; libvirt's errors come back as :class:`LibvirtError` with
libvirt's own message. Events come on the asyncio loop (``libvirtaio``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import libvirt
import libvirtaio

from .base import HypervisorError


class LibvirtError(HypervisorError):
    """libvirt refused or failed; the message is libvirt's (JSON-RPC ``HYPERVISOR_ERROR``)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


def register_event_loop() -> None:
    """libvirt's events on this loop; once per process, as libvirt allows."""
    # libvirt prints every error to stderr unless told otherwise; we log ours.
    libvirt.registerErrorHandler(lambda *_: None, None)
    loop = asyncio.get_running_loop()
    impl = libvirtaio.getCurrentImpl()
    if impl is None:
        libvirtaio.virEventRegisterAsyncIOImpl(loop=loop)
    elif impl.loop is not loop:
        raise LibvirtError("libvirt's events are bound to another event loop of this process")


class Calls:
    """Run blocking libvirt calls in a thread pool: ``await calls(fn, *args)``."""

    def __init__(self, threads: int) -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="libvirt")

    async def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        except libvirt.libvirtError as exc:
            raise LibvirtError(exc.get_error_message() or str(exc), exc.get_error_code()) from None

    def shutdown(self) -> None:
        """No more calls: queued ones are cancelled, running ones are not waited for."""
        self._executor.shutdown(wait=False, cancel_futures=True)
