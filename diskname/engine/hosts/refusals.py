"""A host's JSON-RPC errors become the engine's, in one table, where replies are read.

As httpcore's ``map_exceptions``: every call the engine makes to a host on an
action's behalf goes through :func:`host_errors`, so callers catch classes
(:class:`~..errors.VmNotOnHost`, :class:`~..errors.DeviceNotOnVm`...) and never
compare codes, and the HTTP edges map classes to statuses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from ...protocol.host_wire import Code
from ...protocol.jsonrpc import INVALID_PARAMS
from ...streams import CallTimeout, ConnectionLost, FrameTooLarge, RpcError
from ..errors import (
    DeviceNotOnVm,
    EngineError,
    HostCallFailed,
    HostConflict,
    HostRefused,
    HostStateNotWritten,
    HostTimeout,
    HostUnauthorized,
    HypervisorFailed,
    Invalid,
    VmNotOnHost,
)

REFUSALS: Mapping[int, type[EngineError]] = {
    INVALID_PARAMS: Invalid,  # the engine asked wrong: the user's request was
    Code.UNKNOWN_VM: VmNotOnHost,
    Code.UNKNOWN_DEVICE: DeviceNotOnVm,
    Code.HYPERVISOR_ERROR: HypervisorFailed,
    Code.UNAUTHORIZED: HostUnauthorized,
    Code.CONFLICT: HostConflict,
    Code.STATE_NOT_WRITTEN: HostStateNotWritten,
}


def refusal(host: str, method: str, exc: RpcError) -> EngineError:
    """The engine's error for the host's JSON-RPC error ``exc`` (any other code: HostRefused)."""
    message = f"host {host} refused {method}: {exc.message}"
    cls = REFUSALS.get(exc.code, HostRefused)
    return cls(message, exc.code) if issubclass(cls, HostRefused) else cls(message)


@contextlib.contextmanager
def host_errors(host: str, method: str) -> Iterator[None]:
    """Translate the JSON-RPC client's errors for a call of ``method`` into the engine's."""
    try:
        yield
    except RpcError as exc:
        raise refusal(host, method, exc) from exc
    except CallTimeout as exc:
        raise HostTimeout(f"host {host}: {exc}") from exc
    except (ConnectionLost, FrameTooLarge) as exc:
        raise HostCallFailed(f"host {host}: {method} failed: {exc}") from exc
