"""QMP framing and messages without sockets: whole, byte by byte, malformed, fuzzed."""

from __future__ import annotations

import contextlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from diskname.protocol import qmp
from diskname.protocol.errors import LocalProtocolError, RemoteProtocolError
from diskname.protocol.lines import NEED_DATA

pytestmark = pytest.mark.timeout(30)

GREETING = (
    b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""},'
    b' "capabilities": ["oob"]}}\r\n'
)
REPLY = b'{"return": {}, "id": 1}\r\n'
ERROR = b'{"id": 2, "error": {"class": "GenericError", "desc": "Duplicate ID \'x\'"}}\r\n'
EVENT = (
    b'{"timestamp": {"seconds": 1700000000, "microseconds": 500000}, "event": "DEVICE_DELETED",'
    b' "data": {"path": "/machine/peripheral/d1", "device": "d1"}}\r\n'
)


def drain(decoder: qmp.QmpDecoder) -> list[qmp.QmpMessage]:
    out = []
    while (msg := decoder.next_event()) is not NEED_DATA:
        assert not isinstance(msg, type(NEED_DATA))
        out.append(msg)
    return out


def test_a_session_decodes_into_typed_messages() -> None:
    decoder = qmp.QmpDecoder()
    decoder.receive_data(GREETING + REPLY + ERROR + EVENT)
    greeting, reply, error, event = drain(decoder)
    assert greeting == qmp.Greeting(
        version={"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""},
        capabilities=("oob",),
    )
    assert reply == qmp.Return(id=1, value={})
    assert error == qmp.Error(id=2, error_class="GenericError", desc="Duplicate ID 'x'")
    assert event == qmp.Event(
        name="DEVICE_DELETED",
        data={"path": "/machine/peripheral/d1", "device": "d1"},
        timestamp=1700000000.5,
    )


def test_byte_by_byte_gives_the_same_messages() -> None:
    whole = qmp.QmpDecoder()
    whole.receive_data(GREETING + EVENT + REPLY)
    expected = drain(whole)
    decoder = qmp.QmpDecoder()
    got: list[qmp.QmpMessage] = []
    for byte in GREETING + EVENT + REPLY:
        decoder.receive_data(bytes([byte]))
        got += drain(decoder)
    assert got == expected


def test_blank_lines_are_skipped_and_eof_inside_a_message_is_an_error() -> None:
    decoder = qmp.QmpDecoder()
    decoder.receive_data(b"\r\n\n" + REPLY + b'{"return"')
    assert drain(decoder) == [qmp.Return(id=1, value={})]
    decoder.receive_data(b"")
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_event()
    assert info.value.reason == "truncated"


def test_an_oversized_message_is_an_error_not_memory() -> None:
    decoder = qmp.QmpDecoder(max_message=64)
    decoder.receive_data(b'{"return": "' + b"x" * 200)
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_event()
    assert info.value.reason == "oversized"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"not json", "invalid_json"),
        (b"[1, 2]", "invalid_message"),
        (b'{"hello": 1}', "unknown_message"),
        (b'{"return": 1, "id": true}', "invalid_message"),
        (b'{"return": 1, "id": [1]}', "invalid_message"),
        (b'{"error": "boom"}', "invalid_message"),
        (b'{"error": {"class": 1, "desc": "x"}}', "invalid_message"),
        (b'{"event": 5}', "invalid_message"),
        (b'{"event": "X", "data": []}', "invalid_message"),
        (b'{"QMP": []}', "invalid_message"),
        (b'{"QMP": {"capabilities": "oob"}}', "invalid_message"),
    ],
)
def test_malformed_lines_raise_with_a_reason(line: bytes, reason: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        qmp.parse_message(line)
    assert info.value.reason == reason


def test_errors_without_an_id_and_events_without_data_still_parse() -> None:
    assert qmp.parse_message(b'{"error": {"class": "CommandNotFound", "desc": "no"}}') == (
        qmp.Error(id=None, error_class="CommandNotFound", desc="no")
    )
    assert qmp.parse_message(b'{"event": "RESUME"}') == qmp.Event(name="RESUME")


def test_commands_encode_as_one_line() -> None:
    line = qmp.encode_command("device_del", {"id": "d1"}, id=7)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert orjson.loads(line) == {"execute": "device_del", "arguments": {"id": "d1"}, "id": 7}
    assert orjson.loads(qmp.encode_command("query-status")) == {"execute": "query-status"}
    with pytest.raises(LocalProtocolError):
        qmp.encode_command("")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_messages_or_protocol_errors(data: bytes) -> None:
    decoder = qmp.QmpDecoder(max_message=128)
    decoder.receive_data(data)
    decoder.receive_data(b"")
    for _ in range(len(data) + 2):
        try:
            if decoder.next_event() is NEED_DATA:
                return
        except RemoteProtocolError:
            continue


@given(st.dictionaries(st.sampled_from(["return", "error", "event", "QMP", "id"]), json_values))
def test_arbitrary_objects_give_messages_or_protocol_errors(obj: dict[str, object]) -> None:
    with contextlib.suppress(RemoteProtocolError):
        qmp.parse_message(orjson.dumps(obj))
