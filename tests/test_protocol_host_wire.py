"""The host↔engine messages (SPEC §5) without sockets: round trips, hostile shapes, caps."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from diskname.protocol import host_wire as wire
from diskname.protocol.host_fields import MAX_DEVICES, MAX_HASH_CHARS, MAX_MESSAGE_CHARS
from diskname.protocol.jsonrpc import Notification, encode_frame, parse_frame

ids = st.uuids().map(str)
texts = st.text(min_size=1, max_size=40)
hashes = st.text(alphabet="0123456789abcdef", min_size=1, max_size=64)
json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)

agents = st.builds(wire.AgentInfo, texts, st.none() | st.integers(0, 9))
stats_entries = st.builds(
    wire.StatsEntry, ids, st.none() | texts, st.none() | hashes, st.none() | agents
)
stats_replies = st.builds(
    wire.StatsReply,
    st.none() | hashes,
    st.lists(stats_entries, max_size=5).map(tuple),
) | st.builds(wire.StatsReply, hashes, st.none())
devices = st.builds(
    wire.DiskDevice,
    ids,
    ids,
    st.none() | texts,
    texts,
    st.none() | st.text(max_size=20),
    st.booleans(),
)
mappings = st.dictionaries(texts, st.fixed_dictionaries({"name": texts}), max_size=4)
full_vms = st.builds(
    wire.FullVm,
    ids,
    st.none() | texts,
    texts,
    st.none() | hashes,
    st.lists(devices, max_size=4).map(tuple),
    mappings,
)
entries = (
    full_vms
    | st.builds(wire.Deferred, ids)
    | st.builds(wire.VmError, ids, st.integers(-(2**31), 2**31), texts)
)


def over_json(value: Any) -> Any:
    """What the other end gets: the value through real JSON bytes."""
    return orjson.loads(orjson.dumps(value))


@given(stats_replies)
def test_a_stats_reply_survives_the_wire(reply: wire.StatsReply) -> None:
    assert wire.parse_stats_reply(over_json(reply.to_wire())) == reply


@given(st.lists(entries, max_size=6))
def test_a_full_list_survives_the_wire(sent: list[wire.FullListEntry]) -> None:
    assert wire.parse_full_list(over_json([e.to_wire() for e in sent])) == tuple(sent)


@given(ids, hashes)
def test_a_status_notification_survives_the_wire(vm_id: str, vm_hash: str) -> None:
    frame = parse_frame(encode_frame(wire.vm_status_event(vm_id, vm_hash)))
    assert isinstance(frame, Notification)
    assert wire.parse_notification(frame) == wire.VmStatus(vm_id, vm_hash)


@given(json_values)
def test_any_json_is_a_message_or_a_bad_host_message(value: Any) -> None:
    for parse in (wire.parse_stats_reply, wire.parse_full_list, wire.parse_full_entry):
        try:
            parse(value)
        except wire.BadHostMessage as exc:
            assert exc.reason
    note = Notification(f"|virt|VM_status|{uuid.UUID(int=1)}", value)
    assert wire.parse_notification(note) is not None


@given(st.lists(json_values | st.fixed_dictionaries({"vmId": ids}, optional={"x": json_values})))
def test_one_bad_entry_spoils_no_other(raw: list[Any]) -> None:
    parsed = wire.parse_full_list(raw)
    assert len(parsed) == len(raw)
    reply = wire.parse_stats_reply(raw)
    assert reply.vms is not None and len(reply.vms) + reply.skipped == len(raw)


def test_the_host_shapes_read_back_unchanged() -> None:
    vm_id, disk, device = (str(uuid.uuid4()) for _ in range(3))
    dev = {
        "deviceId": device,
        "diskId": disk,
        "serial": disk[:20],
        "iface": "virtio",
        "address": "0000:00:05.0",
        "plugged": True,
        "type": "disk",
    }
    full = {
        "vmId": vm_id,
        "name": "a",
        "status": "Up",
        "hash": "ab" * 16,
        "devices": [dev],
        "guestDiskMapping": {disk[:20]: {"name": "/dev/vdb"}},
    }
    stats = {
        "vmId": vm_id,
        "status": "Up",
        "hash": "ab",
        "agent": {"status": "up", "apiVersion": 3},
    }
    for raw in (
        full,
        {"vmId": vm_id, "deferred": True},
        {"vmId": vm_id, "error": {"code": -32006, "message": "big"}},
    ):
        entry = wire.parse_full_entry(raw)
        assert entry.to_wire() == raw
    assert wire.parse_stats_reply({"digest": "d", "vms": [stats]}).to_wire() == {
        "digest": "d",
        "vms": [stats],
    }
    assert wire.parse_stats_reply({"digest": "d"}).to_wire() == {"digest": "d"}
    assert wire.parse_stats_reply([stats]).to_wire() == [stats]


def test_the_engine_reads_older_and_odder_hosts_leniently() -> None:
    vm_id, disk, device = (str(uuid.uuid4()) for _ in range(3))
    raw = {
        "vmId": vm_id.upper(),
        "hash": 5,
        "devices": [
            {"deviceId": device, "diskId": disk, "address": {"slot": 5, "bus": 0}},
            {"type": "cdrom"},
            "not a device",
        ],
    }
    vm = wire.parse_full_entry(raw)
    assert isinstance(vm, wire.FullVm)
    assert (vm.vm_id, vm.status, vm.hash, vm.name, vm.mapping) == (vm_id, "unknown", None, None, {})
    assert vm.devices == (wire.DiskDevice(device, disk, None, "virtio", '{"bus":0,"slot":5}'),)
    entry = wire.parse_stats_reply([{"vmId": vm_id, "status": 3, "hash": None, "agent": 7}]).vms
    assert entry == (wire.StatsEntry(vm_id, None, None),)
    other = Notification("|virt|VM_status|" + vm_id, ["no", "object"])
    assert wire.parse_notification(other) == wire.VmStatus(vm_id, None)
    assert wire.parse_notification(Notification("|virt|Host_status|x")) is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("a string", "not_object"),
        ({"vmId": "nope"}, "bad_id"),
        ({"vmId": str(uuid.UUID(int=1)), "devices": {"a": 1}}, "bad_field"),
        ({"vmId": str(uuid.UUID(int=1)), "devices": [{"diskId": "x", "deviceId": "y"}]}, "bad_id"),
        ({"vmId": str(uuid.UUID(int=1)), "status": ["Up"]}, "bad_field"),
        ({"vmId": str(uuid.UUID(int=1)), "hash": "h" * (MAX_HASH_CHARS + 1)}, "field_too_long"),
        ({"vmId": str(uuid.UUID(int=1)), "devices": [{}] * (MAX_DEVICES + 1)}, "too_many"),
        ({"vmId": str(uuid.UUID(int=1)), "error": {"code": "big", "message": ""}}, "bad_field"),
    ],
)
def test_a_bad_entry_says_why_and_names_its_vm_when_it_can(raw: Any, reason: str) -> None:
    with pytest.raises(wire.BadHostMessage) as info:
        wire.parse_full_entry(raw)
    assert info.value.reason == reason
    known = isinstance(raw, dict) and raw.get("vmId") != "nope"
    assert info.value.vm_id == (raw["vmId"] if known else None)


def test_a_long_error_message_is_cut_and_a_bad_reply_is_refused_whole() -> None:
    vm_id = str(uuid.UUID(int=1))
    raw = {"vmId": vm_id, "error": {"code": -32006, "message": "x" * (MAX_MESSAGE_CHARS * 2)}}
    entry = wire.parse_full_entry(raw)
    assert isinstance(entry, wire.VmError) and len(entry.message) == MAX_MESSAGE_CHARS
    for bad in ("x", 5, {"vms": 5}, {"digest": "d" * (MAX_HASH_CHARS + 1)}):
        with pytest.raises(wire.BadHostMessage):
            wire.parse_stats_reply(bad)
    with pytest.raises(wire.BadHostMessage):
        wire.parse_full_list({"vms": []})
    with pytest.raises(wire.BadHostMessage):
        wire.parse_notification(Notification("|virt|VM_status|not-a-uuid"))


def test_messages_refuse_to_be_built_wrong() -> None:
    with pytest.raises(wire.BadHostMessage):
        wire.StatsEntry("NOT-CANONICAL", None, None)
    with pytest.raises(wire.BadHostMessage):
        wire.FullVm(str(uuid.UUID(int=1)), None, "", None)
    with pytest.raises(wire.BadHostMessage):
        wire.VmError(str(uuid.UUID(int=1)), True, "")  # type: ignore[arg-type]


def test_request_params_and_the_codes_are_pinned() -> None:
    assert wire.stats_params(None) == {"digest": ""} and wire.stats_params("d") == {"digest": "d"}
    assert wire.asked_digest({"digest": ""}) == "" and wire.asked_digest(None) is None
    assert wire.asked_vms(wire.full_list_params(["a"])) == ["a"] and wire.asked_vms({}) is None
    with pytest.raises(wire.BadHostMessage):
        wire.asked_vms({"vmList": [1]})
    assert {c.name: int(c) for c in wire.Code} == {
        "UNKNOWN_VM": -32001,
        "UNKNOWN_DEVICE": -32002,
        "HYPERVISOR_ERROR": -32003,
        "UNAUTHORIZED": -32004,
        "CONFLICT": -32005,
        "VM_TOO_LARGE": -32006,
        "STATE_NOT_WRITTEN": -32007,
    }
    assert orjson.dumps({"code": wire.Code.VM_TOO_LARGE}) == b'{"code":-32006}'
