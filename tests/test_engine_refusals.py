"""A host's JSON-RPC errors become the engine's classes in one table (no sockets)."""

from __future__ import annotations

import pytest

from diskname.engine import errors
from diskname.engine.hosts.refusals import REFUSALS, host_errors, refusal
from diskname.engine.http.errors import REST
from diskname.protocol.host_wire import Code
from diskname.protocol.jsonrpc import INVALID_PARAMS
from diskname.streams import CallTimeout, ConnectionLost, FrameTooLarge, RpcError


@pytest.mark.parametrize(
    ("code", "cls", "status"),
    [
        (Code.UNKNOWN_VM, errors.VmNotOnHost, 409),
        (Code.UNKNOWN_DEVICE, errors.DeviceNotOnVm, 409),
        (Code.CONFLICT, errors.HostConflict, 409),
        (Code.HYPERVISOR_ERROR, errors.HypervisorFailed, 502),
        (Code.UNAUTHORIZED, errors.HostUnauthorized, 502),
        (-32099, errors.HostRefused, 502),  # a code this engine does not know
        (INVALID_PARAMS, errors.Invalid, 400),
    ],
)
def test_each_code_has_one_class_and_the_status_it_always_had(
    code: int, cls: type[errors.EngineError], status: int
) -> None:
    exc = refusal("h1", "VM.hotplugDisk", RpcError(code, "no"))
    assert type(exc) is cls and str(exc) == "host h1 refused VM.hotplugDisk: no"
    assert REST[exc].status == status
    if isinstance(exc, errors.HostRefused):
        assert exc.code == code


def test_every_call_code_is_in_the_table() -> None:
    assert set(Code) - set(REFUSALS) == {Code.VM_TOO_LARGE}  # an entry's code, not a call's


@pytest.mark.parametrize(
    ("raised", "cls"),
    [
        (RpcError(Code.UNKNOWN_DEVICE, "gone"), errors.DeviceNotOnVm),
        (CallTimeout("VM.hotunplugDisk", 30.0), errors.HostTimeout),
        (ConnectionLost("closed"), errors.HostCallFailed),
        (FrameTooLarge("big"), errors.HostCallFailed),
    ],
)
def test_the_clients_errors_are_translated_once(raised: Exception, cls: type[Exception]) -> None:
    with pytest.raises(cls) as info, host_errors("h1", "VM.hotunplugDisk"):
        raise raised
    assert info.value.__cause__ is raised
