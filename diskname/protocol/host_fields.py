"""Field checks and caps of the host↔engine messages (:mod:`.host_wire`).

A host is trusted with its own VMs only: every text it sends has a cap, every
id must be a UUID, and whatever breaks a rule is a :class:`BadHostMessage`.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .agent_wire import MAX_MAPPING_ENTRIES as MAX_AGENT_ENTRIES
from .errors import RemoteProtocolError
from .limits import MAX_DEVICES_PER_VM

MAX_HASH_CHARS = 128
MAX_STATUS_CHARS = 64
MAX_TEXT_CHARS = 1024  # a VM's name, a device's serial, bus and address
MAX_MESSAGE_CHARS = 4096  # an error's message: longer ones are cut
MAX_DEVICES = 4 * MAX_DEVICES_PER_VM  # devices listed for one VM, disks or not
MAX_MAPPING_ENTRIES = 2 * MAX_AGENT_ENTRIES  # the agent's and qemu-ga's, merged

T = TypeVar("T")

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


class BadHostMessage(RemoteProtocolError):
    """A payload breaks the rules; ``vm_id`` names its VM when that much was read."""

    def __init__(self, message: str, *, reason: str, vm_id: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.vm_id = vm_id


def bad(reason: str, message: str) -> BadHostMessage:
    return BadHostMessage(message, reason=reason)


def canonical_uuid(value: Any) -> str:
    """Lower-case canonical text of a UUID (any form :class:`uuid.UUID` reads)."""
    if isinstance(value, str):
        if _UUID.match(value):
            return value
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    raise bad("bad_id", f"not a UUID: {str(value)[:64]!r}")


def vm_key(value: Any) -> str:
    """A VM id from the wire as :func:`canonical_uuid`, one string per VM however many
    messages name it: the engine keys many per-VM maps on it, for 100,000 VMs."""
    return sys.intern(canonical_uuid(value))


Setter = Callable[[Any, Any], None]
_new = object.__new__
_SETTERS: dict[type, tuple[Setter, ...]] = {}


def checked(cls: type[T], *values: Any) -> T:
    """An instance of the frozen dataclass ``cls`` from values its parser has just
    checked, in field order, without checking them again in ``__post_init__`` (the
    parsers of the stats list, read for every VM whenever a host's digest moves)."""
    obj = _new(cls)
    for put, value in zip(_SETTERS.get(cls) or _setters(cls), values):
        put(obj, value)
    return obj


def _setters(cls: type) -> tuple[Setter, ...]:
    def setter(name: str) -> Setter:
        slot = cls.__dict__.get(name)
        if slot is not None and hasattr(slot, "__set__"):  # a slot: set it directly
            return slot.__set__  # type: ignore[no-any-return]
        return lambda obj, value: object.__setattr__(obj, name, value)

    found = _SETTERS[cls] = tuple(setter(f.name) for f in dataclasses.fields(cls))
    return found


def check_id(*values: str) -> None:
    for value in values:
        if not (isinstance(value, str) and _UUID.match(value)):
            raise bad("bad_id", f"not a canonical UUID: {str(value)[:64]!r}")


def check_text(
    value: Any, what: str, limit: int, *, optional: bool = False, empty: bool = False
) -> None:
    """A string within ``limit``: not empty unless ``empty``, None if ``optional``."""
    if value is None and optional:
        return
    if not isinstance(value, str) or not (value or empty):
        raise bad("bad_field", f"{what} must be a non-empty string")
    if len(value) > limit:
        raise bad("field_too_long", f"{what} is longer than {limit} characters")


def text_or_none(value: Any, what: str, limit: int) -> str | None:
    """A text the engine reads leniently: another type, or "", counts as absent."""
    if not isinstance(value, str) or not value:
        return None
    if len(value) > limit:
        raise bad("field_too_long", f"{what} is longer than {limit} characters")
    return value


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def as_object(raw: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(raw, dict):
        raise bad("not_object", f"{what} must be an object")
    return raw
