"""The oVirt guest agent line protocol, without I/O.

One JSON object per line, its message name under ``__name__``. The guest is
untrusted: :func:`decode_message` turns a line into a typed message or raises
:class:`RemoteProtocolError` with a ``reason`` the host counts. Unknown
messages are not errors (the original agent sends many we ignore); they come
back as :class:`UnknownMessage`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Union

from ..compat import SLOTS, jsonlib
from .errors import LocalProtocolError, remote

AGENT_API_VERSION = 3
MAX_MAPPING_ENTRIES = 4096
MAX_KEY_CHARS = 256
MAX_NAME_CHARS = 1024
MAX_LIST_ITEMS = 256
MAX_TEXT_CHARS = 4096

# Extension fields of a mapping entry and the JSON types each may take.
_EXTENSIONS: dict[str, str] = {
    "diskseq": "int",
    "bus": "str",
    "address": "str|obj",
    "by_id": "str|list",
    "by_path": "str|list",
    "size": "int",
    "partitions": "list",
    "holders": "list",
    "mountpoints": "list",
    "source": "str",
    "serial": "str",
}


@dataclass(frozen=True, **SLOTS)
class DiskEntry:
    """What the guest says about one disk: its name plus optional extensions."""

    name: str
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, **self.extra}


@dataclass(frozen=True, **SLOTS)
class Heartbeat:
    api_version: int = AGENT_API_VERSION
    free_ram: int | None = None


@dataclass(frozen=True, **SLOTS)
class DisksUsage:
    mapping: Mapping[str, DiskEntry]
    disks: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, **SLOTS)
class Refresh:
    """Host to agent: send everything again."""

    api_version: int = AGENT_API_VERSION


@dataclass(frozen=True, **SLOTS)
class ApiVersion:
    """Host to agent: the API version both sides will speak."""

    api_version: int


@dataclass(frozen=True, **SLOTS)
class UnknownMessage:
    """A well-formed message we do not handle (``host-name``, ``applications``...)."""

    name: str


Message = Union[Heartbeat, DisksUsage, Refresh, ApiVersion, UnknownMessage]


def _int(obj: Mapping[str, Any], key: str, default: int | None) -> int | None:
    value = obj.get(key, default)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise remote("bad_field", f"{key!r} must be an integer")


def _check_text(value: Any, what: str, limit: int = MAX_TEXT_CHARS) -> str:
    if not isinstance(value, str):
        raise remote("bad_field", f"{what} must be a string")
    if len(value) > limit:
        raise remote("field_too_long", f"{what} is longer than {limit} characters")
    return value


def _check_ext(key: str, value: Any) -> Any:
    kinds = _EXTENSIONS[key].split("|")
    if "int" in kinds and isinstance(value, int) and not isinstance(value, bool):
        return value
    if "str" in kinds and isinstance(value, str):
        return _check_text(value, key)
    if "list" in kinds and isinstance(value, list):
        if len(value) > MAX_LIST_ITEMS:
            raise remote("field_too_long", f"{key} has more than {MAX_LIST_ITEMS} items")
        return [_check_text(item, f"{key} item") for item in value]
    if "obj" in kinds and isinstance(value, dict):
        if len(value) > 16:
            raise remote("field_too_long", f"{key} has too many keys")
        return {_check_text(k, key): _check_text(v, f"{key}.{k}") for k, v in value.items()}
    raise remote("bad_field", f"{key} has the wrong type")


def parse_entry(serial: Any, raw: Any) -> DiskEntry:
    """Validate one ``serial: {name, ...}`` pair of a mapping."""
    _check_text(serial, "mapping key", MAX_KEY_CHARS)
    if not isinstance(raw, dict):
        raise remote("bad_mapping", "a mapping value must be an object")
    name = _check_text(raw.get("name"), "name", MAX_NAME_CHARS)
    extra = {k: _check_ext(k, v) for k, v in raw.items() if k in _EXTENSIONS}
    return DiskEntry(name=name, extra=MappingProxyType(extra))


def parse_mapping(raw: Any) -> dict[str, DiskEntry]:
    """Validate a whole ``{serial: {name, ...}}`` mapping."""
    if not isinstance(raw, dict):
        raise remote("bad_mapping", "mapping must be an object")
    if len(raw) > MAX_MAPPING_ENTRIES:
        raise remote("too_many_entries", f"mapping has more than {MAX_MAPPING_ENTRIES} entries")
    return {serial: parse_entry(serial, value) for serial, value in raw.items()}


def _disks_usage(obj: Mapping[str, Any]) -> DisksUsage:
    disks = obj.get("disks", [])
    if not isinstance(disks, list) or not all(isinstance(d, dict) for d in disks):
        raise remote("bad_field", "disks must be a list of objects")
    if len(disks) > MAX_LIST_ITEMS:
        raise remote("field_too_long", "too many filesystems in disks")
    return DisksUsage(mapping=parse_mapping(obj.get("mapping", {})), disks=tuple(disks))


def message_from_object(obj: Any) -> Message:
    """Build a typed message from an already-parsed JSON value."""
    if not isinstance(obj, dict):
        raise remote("not_object", "a message must be a JSON object")
    name = obj.get("__name__")
    if not isinstance(name, str):
        raise remote("missing_name", "a message needs a string __name__")
    if name == "heartbeat":
        return Heartbeat(
            api_version=_int(obj, "apiVersion", 0) or 0, free_ram=_int(obj, "free-ram", None)
        )
    if name == "disks-usage":
        return _disks_usage(obj)
    if name == "refresh":
        return Refresh(api_version=_int(obj, "apiVersion", 0) or 0)
    if name == "api-version":
        return ApiVersion(api_version=_int(obj, "apiVersion", 0) or 0)
    return UnknownMessage(name=_check_text(name, "__name__", MAX_KEY_CHARS))


def decode_message(line: bytes) -> Message:
    """Parse one line (without its newline) into a message.

    Raises :class:`RemoteProtocolError` with reason ``nul_byte``,
    ``invalid_utf8``, ``invalid_json``, ``not_object``, ``missing_name``,
    ``bad_field``, ``bad_mapping``, ``field_too_long`` or ``too_many_entries``.
    """
    if b"\x00" in line:
        raise remote("nul_byte", "NUL byte in a line")
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise remote("invalid_utf8", f"invalid UTF-8: {exc.reason}") from None
    try:
        obj = jsonlib.loads(line)
    except jsonlib.JSONDecodeError as exc:
        raise remote("invalid_json", f"invalid JSON: {exc}") from None
    return message_from_object(obj)


def message_to_object(msg: Message) -> dict[str, Any]:
    """The JSON object for a message, as the original agent and VDSM write it."""
    if isinstance(msg, Heartbeat):
        out: dict[str, Any] = {"__name__": "heartbeat", "apiVersion": msg.api_version}
        if msg.free_ram is not None:
            out["free-ram"] = msg.free_ram
        return out
    if isinstance(msg, DisksUsage):
        return {
            "__name__": "disks-usage",
            "disks": list(msg.disks),
            "mapping": {s: e.to_json() for s, e in msg.mapping.items()},
        }
    if isinstance(msg, Refresh):
        return {"__name__": "refresh", "apiVersion": msg.api_version}
    if isinstance(msg, ApiVersion):
        return {"__name__": "api-version", "apiVersion": msg.api_version}
    raise LocalProtocolError("cannot send an unknown message", reason="unknown")


def encode_message(msg: Message) -> bytes:
    """One line of bytes, newline included."""
    return jsonlib.dumps(message_to_object(msg)) + b"\n"
