"""Request parsing for the JSON API: every rule here is also in ``web/openapi.json``.

The document and the code must agree exactly (a fuzzer holds them to it): a body
the document allows is accepted, anything else is an :class:`Invalid` (400). The
patterns are shared: ``tests/test_engine_openapi.py`` checks the document uses them.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp import web

from ...protocol.disks import DEFAULT_DISK_SIZE
from ..actions import AttachRequest
from ..core.models import DISK_NAME_MAX, DiskSpec, canonical_uuid
from ..core.models import NAME_MAX as NAME_MAX  # the document's, as the rest below
from ..core.models import NAME_PATTERN as NAME_PATTERN
from ..errors import Invalid
from .inputs import check_text

TOKEN_MAX = 4096
# A host's address: a DNS name or an IPv4/IPv6 literal (no brackets, no spaces).
ADDRESS_PATTERN = r"^[A-Za-z0-9:][A-Za-z0-9.:-]*$"
ADDRESS_MAX = 253
# A direct LUN's serial as the storage reports it (SCSI unit serial, WWID).
LUN_SERIAL_PATTERN = r"^[A-Za-z0-9._:+-]+$"
LUN_SERIAL_MAX = 255
VERSION_PATTERN = r"^[0-9]{1,3}\.[0-9]{1,3}$"

_KIND_NAMES = {str: "a string", int: "an integer", bool: "a boolean", dict: "an object"}


def uuid_text(value: Any, what: str) -> str:
    """The lower-case canonical form of a UUID written 8-4-4-4-12, or :class:`Invalid`."""
    try:
        return canonical_uuid(value, hyphenated=True)
    except ValueError:
        raise Invalid(f"{what} is not a UUID") from None


def path_uuid(request: web.Request, name: str) -> str:
    return uuid_text(request.match_info[name], name)


async def body(request: web.Request) -> dict[str, Any]:
    try:
        parsed = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise Invalid("the body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise Invalid("the body must be a JSON object")
    return parsed


def field(body: dict[str, Any], name: str, kind: type, *, required: bool = True) -> Any:
    """``body[name]`` of type ``kind``; absent (and not required) is None, null is wrong."""
    if name not in body:
        if required:
            raise Invalid(f"missing field {name!r}")
        return None
    value = body[name]
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON has one number type: 8779.0 is the integer 8779
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise Invalid(f"field {name!r} must be {_KIND_NAMES.get(kind, kind.__name__)}")
    if isinstance(value, str):
        check_text(value, f"field {name!r}")
    return value


def text(
    body: dict[str, Any], name: str, pattern: str, max_len: int, *, required: bool = True
) -> str | None:
    """A string field that matches ``pattern`` and has at most ``max_len`` characters."""
    value: str | None = field(body, name, str, required=required)
    if value is not None and (len(value) > max_len or not re.fullmatch(pattern, value)):
        raise Invalid(f"field {name!r} is not valid: {_describe(pattern, max_len)}")
    return value


def _describe(pattern: str, max_len: int) -> str:
    rules = {
        NAME_PATTERN: "text with no control, bidi or zero-width characters, not only white space",
        ADDRESS_PATTERN: "a DNS name or an IP address",
        LUN_SERIAL_PATTERN: "letters, digits and . _ : + -",
        VERSION_PATTERN: "MAJOR.MINOR, such as 4.7",
    }
    return f"{rules.get(pattern, 'see /api/openapi.json')}, at most {max_len} characters"


def optional_uuid(body: dict[str, Any], name: str) -> str | None:
    value = field(body, name, str, required=False)
    return None if value is None else uuid_text(value, name)


def ref_id(body: dict[str, Any], name: str, *, required: bool) -> str | None:
    """The ``id`` inside a reference such as ``{"host": {"id": ...}}``."""
    ref = field(body, name, dict, required=required)
    if ref is None:
        return None
    if "id" not in ref:
        if required:
            raise Invalid(f"missing field {name}.id")
        return None
    return uuid_text(ref["id"], f"{name}.id")


def query_flag(request: web.Request, name: str) -> bool:
    """A ``true``/``false`` query parameter (absent: false), or :class:`Invalid`."""
    raw = request.query.get(name, "false")
    if raw not in ("true", "false"):
        raise Invalid(f"{name} must be true or false")
    return raw == "true"


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,9}", raw) or not low <= int(raw) <= high:
        raise Invalid(f"{name} must be an integer from {low} to {high}")
    return int(raw)


# -- bodies ------------------------------------------------------------------------


def attach_request(body: dict[str, Any]) -> AttachRequest:
    """``POST .../diskattachments``: ``{"interface", "active"?, "disk"?: {...}}``."""
    active = field(body, "active", bool, required=False)
    return AttachRequest(
        interface=field(body, "interface", str),
        active=True if active is None else active,
        disk_id=ref_id(body, "disk", required=False),
        new_disk=_new_disk(body),
        lun_serial=_lun_serial(body),
    )


def _new_disk(body: dict[str, Any]) -> DiskSpec | None:
    """The name and size in ``{"disk": {"name", "provisioned_size"}}``, if any."""
    disk = field(body, "disk", dict, required=False) or {}
    name = text(disk, "name", NAME_PATTERN, DISK_NAME_MAX, required=False)
    size = field(disk, "provisioned_size", int, required=False)
    if name is None and size is None:
        return None
    if name is None:
        raise Invalid("a new disk with a provisioned_size needs a name too")
    return DiskSpec(name, DEFAULT_DISK_SIZE if size is None else size)


def _lun_serial(body: dict[str, Any]) -> str | None:
    """The serial in ``{"disk": {"lun_storage": {"serial"}}}``: a new direct-LUN disk."""
    disk = body.get("disk")
    if not isinstance(disk, dict) or "lun_storage" not in disk:
        return None
    lun = field(disk, "lun_storage", dict)
    return text(lun, "serial", LUN_SERIAL_PATTERN, LUN_SERIAL_MAX)
