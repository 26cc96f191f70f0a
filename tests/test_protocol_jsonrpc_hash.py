"""JSON-RPC frames and the stable VM hash."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from diskname.protocol import jsonrpc as rpc
from diskname.protocol.hashing import vm_hash


@pytest.mark.parametrize(
    "frame",
    [
        rpc.Request(1, "Host.ping"),
        rpc.Request("a", "VM.create", {"vmId": "x"}),
        rpc.Notification("|virt|VM_status|x", {"vmId": "x", "hash": "h"}),
        rpc.Response(7, [1, 2]),
        rpc.Response(7, None),
        rpc.ErrorResponse(3, -32001, "unknown VM", {"vmId": "x"}),
        rpc.ErrorResponse(None, rpc.PARSE_ERROR, "parse error"),
    ],
)
def test_frames_round_trip(frame: rpc.Frame) -> None:
    assert rpc.parse_frame(rpc.encode_frame(frame)) == frame


@pytest.mark.parametrize(
    ("line", "code", "rid"),
    [
        (b"{nope", rpc.PARSE_ERROR, None),
        (b"[]", rpc.INVALID_REQUEST, None),
        (b'{"jsonrpc": "1.0", "id": 4, "method": "x"}', rpc.INVALID_REQUEST, 4),
        (b'{"jsonrpc": "2.0", "id": 4, "method": 5}', rpc.INVALID_REQUEST, 4),
        (b'{"jsonrpc": "2.0", "id": 4, "method": "x", "params": 5}', rpc.INVALID_PARAMS, 4),
        (b'{"jsonrpc": "2.0", "id": [1], "method": "x"}', rpc.INVALID_REQUEST, None),
        (b'{"jsonrpc": "2.0", "id": 4}', rpc.INVALID_REQUEST, 4),
    ],
)
def test_bad_frames_carry_the_code_and_id_to_answer_with(
    line: bytes, code: int, rid: rpc.RequestId | None
) -> None:
    with pytest.raises(rpc.JsonRpcError) as info:
        rpc.parse_frame(line)
    assert (info.value.code, info.value.id) == (code, rid)
    reply = rpc.encode_frame(info.value.to_response())
    assert orjson.loads(reply)["error"]["code"] == code


@given(st.binary(max_size=200))
def test_random_bytes_give_a_frame_or_an_answerable_error(data: bytes) -> None:
    try:
        rpc.parse_frame(data)
    except rpc.JsonRpcError as exc:
        assert orjson.loads(rpc.encode_frame(exc.to_response()))["jsonrpc"] == "2.0"


DEVICES = [
    {"deviceId": "b", "diskId": "d2", "iface": "virtio_scsi", "plugged": True},
    {"deviceId": "a", "diskId": "d1", "iface": "virtio", "plugged": True},
]
MAPPING = {"d1": {"name": "/dev/vda", "diskseq": 1}, "d2": {"name": "/dev/sda"}}


def test_hash_ignores_key_and_device_order() -> None:
    shuffled = [dict(reversed(list(d.items()))) for d in reversed(DEVICES)]
    assert vm_hash(DEVICES, MAPPING) == vm_hash(shuffled, dict(reversed(list(MAPPING.items()))))


def test_hash_changes_with_any_device_or_mapping_change() -> None:
    base = vm_hash(DEVICES, MAPPING)
    assert vm_hash(DEVICES[:1], MAPPING) != base
    assert vm_hash(DEVICES, {**MAPPING, "d1": {"name": "/dev/vda", "diskseq": 2}}) != base
    assert vm_hash(DEVICES, {"d1": MAPPING["d1"]}) != base


def test_hash_is_the_same_in_another_process() -> None:
    code = (
        "import orjson,sys;from diskname.protocol.hashing import vm_hash;"
        "d=orjson.loads(sys.argv[1]);print(vm_hash(d['devices'],d['mapping']))"
    )
    arg = orjson.dumps({"devices": DEVICES, "mapping": MAPPING}).decode()
    out = subprocess.run(
        [sys.executable, "-c", code, arg], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.strip() == vm_hash(DEVICES, MAPPING)
