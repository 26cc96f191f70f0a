"""The Windows calls themselves, through ctypes: the serial port and the service.

The thinnest layer of the Windows agent and the only one that cannot run on
Linux; it is type-checked there with ``mypy --platform win32`` and kept to
what the other modules cannot do without Windows.

- :class:`Win32Port`: ``CreateFileW`` with ``FILE_FLAG_OVERLAPPED`` on
  ``\\\\.\\Global\\<port>``; every read and write is an overlapped call the
  calling thread waits for (``GetOverlappedResult``), so the reader thread
  never blocks the writer, as a handle opened for synchronous I/O would.
- :func:`run_as_service`: ``StartServiceCtrlDispatcherW`` on the main thread;
  the service's main runs the agent's event loop and a stop or shutdown
  control cancels it. Installed with ``sc.exe create`` (docs/windows.md).
"""

from __future__ import annotations

import sys

assert sys.platform == "win32"  # mypy checks the rest only for --platform win32

import asyncio  # noqa: E402
import ctypes  # noqa: E402
import logging  # noqa: E402
from collections.abc import Callable, Coroutine  # noqa: E402
from ctypes import wintypes  # noqa: E402
from typing import Any  # noqa: E402

log = logging.getLogger(__name__)

GENERIC_READ, GENERIC_WRITE = 0x80000000, 0x40000000
OPEN_EXISTING = 3
FILE_FLAG_OVERLAPPED = 0x40000000
INVALID_HANDLE_VALUE = wintypes.HANDLE(-1).value
ERROR_IO_PENDING = 997
# What ends a link rather than being an error: cancelled, the host gone.
ENDED = frozenset({995, 38, 109, 233})  # OPERATION_ABORTED, HANDLE_EOF, BROKEN_PIPE, NOT_CONNECTED

SERVICE_NAME = "diskname-agent"
SERVICE_WIN32_OWN_PROCESS = 0x10
SERVICE_STOPPED, SERVICE_START_PENDING, SERVICE_STOP_PENDING, SERVICE_RUNNING = 1, 2, 3, 4
SERVICE_CONTROL_STOP, SERVICE_CONTROL_INTERROGATE, SERVICE_CONTROL_SHUTDOWN = 1, 4, 5
SERVICE_ACCEPT_STOP, SERVICE_ACCEPT_SHUTDOWN = 1, 4


class OVERLAPPED(ctypes.Structure):
    _fields_ = [
        ("Internal", ctypes.c_void_p),
        ("InternalHigh", ctypes.c_void_p),
        ("Offset", wintypes.DWORD),
        ("OffsetHigh", wintypes.DWORD),
        ("hEvent", wintypes.HANDLE),
    ]


class SERVICE_STATUS(ctypes.Structure):
    _fields_ = [
        (name, wintypes.DWORD)
        for name in (
            "dwServiceType",
            "dwCurrentState",
            "dwControlsAccepted",
            "dwWin32ExitCode",
            "dwServiceSpecificExitCode",
            "dwCheckPoint",
            "dwWaitHint",
        )
    ]


SERVICE_MAIN = ctypes.WINFUNCTYPE(None, wintypes.DWORD, ctypes.POINTER(wintypes.LPWSTR))
HANDLER_EX = ctypes.WINFUNCTYPE(
    wintypes.DWORD, wintypes.DWORD, wintypes.DWORD, wintypes.LPVOID, wintypes.LPVOID
)


class SERVICE_TABLE_ENTRYW(ctypes.Structure):
    _fields_ = [("lpServiceName", wintypes.LPWSTR), ("lpServiceProc", SERVICE_MAIN)]


def _kernel32() -> Any:
    return ctypes.WinDLL("kernel32", use_last_error=True)


def _advapi32() -> Any:
    return ctypes.WinDLL("advapi32", use_last_error=True)


def _error() -> OSError:
    return ctypes.WinError(ctypes.get_last_error())


class Win32Port:
    """A virtio-serial port opened for overlapped I/O (a :class:`.port.BlockingPort`)."""

    def __init__(self, handle: int) -> None:
        self._k32 = _kernel32()
        self._handle = handle

    @classmethod
    def open(cls, path: str) -> Win32Port:
        """Open ``\\\\.\\Global\\<name>``; raises OSError when the port is not there."""
        k32 = _kernel32()
        k32.CreateFileW.restype = wintypes.HANDLE
        handle = k32.CreateFileW(
            path, GENERIC_READ | GENERIC_WRITE, 0, None, OPEN_EXISTING, FILE_FLAG_OVERLAPPED, None
        )
        if handle in (None, INVALID_HANDLE_VALUE):
            raise _error()
        return cls(int(handle))

    def _io(self, call: Any, buffer: Any, size: int) -> int:
        event = self._k32.CreateEventW(None, True, False, None)
        if not event:
            raise _error()
        try:
            overlapped = OVERLAPPED(hEvent=event)
            done = wintypes.DWORD(0)
            ok = call(self._handle, buffer, size, None, ctypes.byref(overlapped))
            if not ok and ctypes.get_last_error() != ERROR_IO_PENDING:
                if ctypes.get_last_error() in ENDED:
                    return 0
                raise _error()
            if not self._k32.GetOverlappedResult(
                self._handle, ctypes.byref(overlapped), ctypes.byref(done), True
            ):
                if ctypes.get_last_error() in ENDED:
                    return 0
                raise _error()
            return int(done.value)
        finally:
            self._k32.CloseHandle(event)

    def read(self, size: int) -> bytes:
        buffer = ctypes.create_string_buffer(size)
        count = self._io(self._k32.ReadFile, buffer, size)
        return buffer.raw[:count]

    def write(self, data: bytes) -> int:
        count = self._io(self._k32.WriteFile, data, len(data))
        if count == 0 and data:
            raise BrokenPipeError("the host side of the channel is gone")
        return count

    def cancel(self) -> None:
        self._k32.CancelIoEx(self._handle, None)

    def close(self) -> None:
        if self._handle:
            self._k32.CloseHandle(self._handle)
            self._handle = 0


ServiceMain = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


class _Service:
    """The state shared by the dispatcher's threads and the agent's event loop."""

    def __init__(self, main: ServiceMain, what: str) -> None:
        self.main, self.what = main, what
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[None] | None = None
        self.status_handle: Any = None
        self.exit_code = 0
        self.handler = HANDLER_EX(self._control)
        self.entry = SERVICE_MAIN(self._service_main)

    def report(self, state: int, accepts: int = 0, wait_hint: int = 0) -> None:
        status = SERVICE_STATUS(
            SERVICE_WIN32_OWN_PROCESS, state, accepts, self.exit_code, 0, 0, wait_hint
        )
        _advapi32().SetServiceStatus(self.status_handle, ctypes.byref(status))

    def _control(self, control: int, event_type: int, data: Any, context: Any) -> int:
        if control in (SERVICE_CONTROL_STOP, SERVICE_CONTROL_SHUTDOWN):
            self.report(SERVICE_STOP_PENDING, wait_hint=10_000)
            if self.loop is not None and self.task is not None:
                self.loop.call_soon_threadsafe(self.task.cancel)
        return 0  # NO_ERROR; INTERROGATE needs nothing more

    def _service_main(self, argc: int, argv: Any) -> None:
        advapi = _advapi32()
        advapi.RegisterServiceCtrlHandlerExW.restype = wintypes.HANDLE
        self.status_handle = advapi.RegisterServiceCtrlHandlerExW(SERVICE_NAME, self.handler, None)
        self.report(SERVICE_START_PENDING, wait_hint=30_000)
        try:
            asyncio.run(self._run())
        except BaseException:
            log.exception("%s failed", self.what)
            self.exit_code = 1
        self.report(SERVICE_STOPPED)

    async def _run(self) -> None:
        self.loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        self.task = asyncio.ensure_future(self.main(ready))
        waiter = asyncio.ensure_future(ready.wait())
        await asyncio.wait([self.task, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        self.report(SERVICE_RUNNING, SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN)
        try:
            await self.task
        except asyncio.CancelledError:
            log.info("%s stopped by the service control manager", self.what)


def run_as_service(main: ServiceMain, what: str) -> int:
    """Hand this process to the service control manager; returns when the service stopped."""
    service = _Service(main, what)
    table = (SERVICE_TABLE_ENTRYW * 2)(
        SERVICE_TABLE_ENTRYW(SERVICE_NAME, service.entry),
        SERVICE_TABLE_ENTRYW(None, SERVICE_MAIN()),
    )
    if not _advapi32().StartServiceCtrlDispatcherW(table):
        # 1063: not started by the service control manager (someone ran it by hand).
        raise _error()
    return service.exit_code
