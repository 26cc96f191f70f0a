"""The agent line protocol: typed messages, hostile input, fuzzing."""

from __future__ import annotations

import contextlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from diskname.protocol import agent_wire as aw
from diskname.protocol.errors import RemoteProtocolError


def reason_of(line: bytes) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        aw.decode_message(line)
    return info.value.reason


def test_original_agent_disks_usage_with_scsi_prefix_key() -> None:
    line = orjson.dumps(
        {
            "__name__": "disks-usage",
            "disks": [{"path": "/", "fs": "ext4", "total": 10, "used": 5}],
            "mapping": {
                "0QEMU_QEMU_HARDDISK_1a2b3c4d-5e6f-7a8b-9": {"name": "/dev/sda"},
                "b7e2c1d0-1111-2222-3": {"name": "/dev/vdb", "diskseq": 9, "bus": "virtio"},
            },
        }
    )
    msg = aw.decode_message(line)
    assert isinstance(msg, aw.DisksUsage)
    assert msg.mapping["0QEMU_QEMU_HARDDISK_1a2b3c4d-5e6f-7a8b-9"].name == "/dev/sda"
    assert msg.mapping["b7e2c1d0-1111-2222-3"].extra == {"diskseq": 9, "bus": "virtio"}
    assert msg.disks[0]["fs"] == "ext4"


def test_unknown_extension_fields_are_ignored() -> None:
    msg = aw.decode_message(b'{"__name__":"disks-usage","mapping":{"s":{"name":"/dev/vdb","x":1}}}')
    assert isinstance(msg, aw.DisksUsage)
    assert msg.mapping["s"].to_json() == {"name": "/dev/vdb"}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"\xff\xfe{}", "invalid_utf8"),
        (b'{"__name__": "heartbeat"', "invalid_json"),
        (b"[1, 2]", "not_object"),
        (b'{"apiVersion": 3}', "missing_name"),
        (b'{"__name__": "heartbeat", "apiVersion": "3"}', "bad_field"),
        (b'{"__name__": "disks-usage", "mapping": []}', "bad_mapping"),
        (b'{"__name__": "disks-usage", "mapping": {"s": 5}}', "bad_mapping"),
        (b'{"__name__": "disks-usage", "mapping": {"s": {"name": 5}}}', "bad_field"),
        (b'{"__name__": "disks-usage", "mapping": {"s": {"name": {"a": []}}}}', "bad_field"),
        (b'{"__name__": "heartbeat"}\x00', "nul_byte"),
    ],
)
def test_hostile_lines_are_rejected_with_a_reason(line: bytes, reason: str) -> None:
    assert reason_of(line) == reason


def test_ten_kilobyte_name_is_rejected() -> None:
    line = orjson.dumps(
        {"__name__": "disks-usage", "mapping": {"s": {"name": "/dev/" + "a" * 10_000}}}
    )
    assert reason_of(line) == "field_too_long"


def test_hundred_thousand_entries_are_rejected() -> None:
    mapping = {f"s{i}": {"name": "/dev/vdb"} for i in range(100_000)}
    assert (
        reason_of(orjson.dumps({"__name__": "disks-usage", "mapping": mapping}))
        == "too_many_entries"
    )


def test_unknown_message_is_not_an_error() -> None:
    assert aw.decode_message(
        b'{"__name__": "applications", "applications": []}'
    ) == aw.UnknownMessage("applications")


@pytest.mark.parametrize(
    "msg",
    [
        aw.Heartbeat(api_version=3, free_ram=1024),
        aw.Refresh(api_version=3),
        aw.ApiVersion(api_version=2),
        aw.DisksUsage(mapping={"abc": aw.DiskEntry("/dev/vdb")}, disks=({"path": "/"},)),
    ],
)
def test_encode_decode_round_trip(msg: aw.Message) -> None:
    line = aw.encode_message(msg)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert aw.decode_message(line[:-1]) == msg


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        aw.decode_message(data)


@given(
    st.dictionaries(st.text(max_size=10), json_values, max_size=6),
    st.sampled_from(["heartbeat", "disks-usage", "refresh", "api-version", "other"]),
)
def test_random_objects_with_a_name_decode_or_are_rejected(
    obj: dict[str, object], name: str
) -> None:
    obj["__name__"] = name
    try:
        msg = aw.decode_message(orjson.dumps(obj))
    except RemoteProtocolError as exc:
        assert exc.reason
    else:
        if name != "other":
            assert aw.message_to_object(msg)["__name__"] == name


@given(st.dictionaries(st.text(max_size=30), st.text(max_size=40), max_size=10))
def test_valid_mappings_survive_the_round_trip(names: dict[str, str]) -> None:
    msg = aw.DisksUsage(mapping={k: aw.DiskEntry(v) for k, v in names.items()})
    assert aw.decode_message(aw.encode_message(msg)[:-1]) == msg
