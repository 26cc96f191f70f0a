"""QMP, the QEMU Machine Protocol, client side, without I/O.

QEMU opens with a greeting (``{"QMP": {"version", "capabilities"}}``); the
client answers ``qmp_capabilities`` and may then send commands
``{"execute": name, "arguments": {...}, "id": id}``. Each command gets one
reply carrying its ``id``: ``{"return": value}`` or ``{"error": {"class",
"desc"}}``. Events (``{"event", "data", "timestamp"}``) may arrive at any
time, between replies. Every message is one JSON object on one line.

Feed bytes to :class:`QmpDecoder` and take :data:`QmpMessage` values out;
:func:`encode_command` makes the bytes to send. A line that is not a QMP
message raises :class:`RemoteProtocolError` with a ``reason``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from ..compat import SLOTS, jsonlib
from .errors import LocalProtocolError, remote
from .lines import NEED_DATA, LineDecoder, NeedData, Oversized, Truncated

# QEMU's replies can be large (query-pci, query-block on a busy VM), but not this large.
MAX_MESSAGE = 16 * 1024 * 1024
CAPABILITIES = "qmp_capabilities"

CommandId = Union[int, str]


@dataclass(frozen=True, **SLOTS)
class Greeting:
    version: dict[str, Any]
    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True, **SLOTS)
class Return:
    id: CommandId | None
    value: Any


@dataclass(frozen=True, **SLOTS)
class Error:
    id: CommandId | None
    error_class: str
    desc: str


@dataclass(frozen=True, **SLOTS)
class Event:
    name: str
    data: dict[str, Any] = field(default_factory=dict)
    timestamp: float | None = None


QmpMessage = Union[Greeting, Return, Error, Event]


def encode_command(
    name: str, arguments: dict[str, Any] | None = None, id: CommandId | None = None
) -> bytes:
    """One command, newline-terminated."""
    if not name:
        raise LocalProtocolError("a command needs a name", reason="empty_command")
    command: dict[str, Any] = {"execute": name}
    if arguments:
        command["arguments"] = arguments
    if id is not None:
        command["id"] = id
    return jsonlib.dumps(command) + b"\n"


def _command_id(obj: dict[str, Any]) -> CommandId | None:
    rid = obj.get("id")
    if rid is None or (isinstance(rid, (int, str)) and not isinstance(rid, bool)):
        return rid
    raise remote("invalid_message", "a reply id must be a number or a string")


def _greeting(body: Any) -> Greeting:
    if not isinstance(body, dict) or not isinstance(body.get("version", {}), dict):
        raise remote("invalid_message", "a greeting must carry a version object")
    caps = body.get("capabilities", [])
    if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
        raise remote("invalid_message", "capabilities must be a list of strings")
    return Greeting(version=body.get("version", {}), capabilities=tuple(caps))


def _error(obj: dict[str, Any]) -> Error:
    err = obj["error"]
    if not isinstance(err, dict):
        raise remote("invalid_message", "error must be an object")
    klass, desc = err.get("class", "GenericError"), err.get("desc", "")
    if not isinstance(klass, str) or not isinstance(desc, str):
        raise remote("invalid_message", "error class and desc must be strings")
    return Error(id=_command_id(obj), error_class=klass, desc=desc)


def _event(obj: dict[str, Any]) -> Event:
    name, data = obj["event"], obj.get("data", {})
    if not isinstance(name, str) or not isinstance(data, dict):
        raise remote("invalid_message", "an event needs a name and an object of data")
    stamp = obj.get("timestamp")
    when = None
    if isinstance(stamp, dict):
        seconds, micros = stamp.get("seconds"), stamp.get("microseconds")
        if isinstance(seconds, int) and isinstance(micros, int):
            when = seconds + micros / 1e6
    return Event(name=name, data=data, timestamp=when)


def parse_message(line: bytes) -> QmpMessage:
    """One line from QEMU as a message, or :class:`RemoteProtocolError`."""
    try:
        obj = jsonlib.loads(line)
    except jsonlib.JSONDecodeError as exc:
        raise remote("invalid_json", f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise remote("invalid_message", "a message must be a JSON object")
    if "return" in obj:
        return Return(id=_command_id(obj), value=obj["return"])
    if "error" in obj:
        return _error(obj)
    if "event" in obj:
        return _event(obj)
    if "QMP" in obj:
        return _greeting(obj["QMP"])
    raise remote("unknown_message", "not a greeting, reply or event")


class QmpDecoder:
    """Bytes in, :data:`QmpMessage` values out (h11 style).

    ``receive_data(b"")`` marks the end of the stream; after that,
    :meth:`next_event` returns the last messages, then :data:`NEED_DATA`
    forever. Oversized or cut-short lines raise :class:`RemoteProtocolError`.
    """

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self._lines = LineDecoder(max_message)

    def receive_data(self, data: bytes) -> None:
        self._lines.receive_data(data)

    def next_event(self) -> QmpMessage | NeedData:
        while True:
            event = self._lines.next_event()
            if isinstance(event, NeedData):
                return NEED_DATA
            if isinstance(event, Oversized):
                raise remote("oversized", "message too large")
            if isinstance(event, Truncated):
                raise remote("truncated", "stream ended inside a message")
            if event.strip():
                return parse_message(event)
