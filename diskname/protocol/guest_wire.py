"""The guest agent's freshness as a host tells the engine (SPEC §17), without I/O.

Two optional parts of ``Host.getAllVmStats`` (old peers ignore them):

- each entry's ``agent``: :class:`AgentInfo`, ``{"status": "up"|"unresponsive"|"none",
  "apiVersion", "since": RFC 3339, "sources": ["agent", "qemu-ga"]}``. It changes
  only when a source comes or goes, so it rides the stats digest: a quiet VM
  costs nothing, a changed one is seen with the next poll, never fetched.
- the reply's ``confirmed``: :class:`Confirmed`, ``{"cursor", "ms": {source:
  {vmId: milliseconds since the epoch}}}``, asked for with ``{"confirmed":
  cursor}`` beside the digest. It lists the VMs whose guest re-sent its mapping
  since ``cursor`` (the names' ``reported_at``), which neither the hash nor the
  digest carries. Integers, not RFC 3339 texts: a quiet fleet of 10,000 agents
  sends a few hundred of them every poll round, and reading a text time cost the
  engine more than everything else a quiet poll does.

Other times are ``datetime.isoformat()`` of an aware UTC time (``+00:00``), which
3.9's ``fromisoformat`` reads too. An older host says ``unknown`` for an agent
it never heard from: read as ``none``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..compat import SLOTS
from .host_fields import (
    MAX_HASH_CHARS,
    MAX_STATUS_CHARS,
    bad,
    check_text,
    checked,
    is_int,
)
from .host_fields import BadHostMessage as BadHostMessage

STATUSES = ("up", "unresponsive", "none")
SOURCES = ("agent", "qemu-ga")
MAX_TIME_CHARS = 40
MAX_CONFIRMED = 100_000  # VMs in one reply's confirmations
MAX_MS = 253_402_300_799_999  # the last millisecond of year 9999: a datetime still


def wall_time(seconds: float) -> str:
    """A wall-clock time (``time.time()``) as the wire spells it."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat()


def parse_time(value: Any, what: str = "a time") -> datetime:
    """An RFC 3339 time with an offset; :class:`BadHostMessage` otherwise."""
    if not isinstance(value, str) or len(value) > MAX_TIME_CHARS:
        raise bad("bad_time", f"{what} must be an RFC 3339 text")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise bad("bad_time", f"{what} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise bad("bad_time", f"{what} has no offset")
    return parsed


@dataclass(frozen=True, **SLOTS)
class AgentInfo:
    """The VM's guest agent as the host sees it (``since``: None from an older host)."""

    status: str
    api_version: int | None = None
    since: str | None = None
    sources: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        check_text(self.status, "agent status", MAX_STATUS_CHARS)
        if self.api_version is not None and not is_int(self.api_version):
            raise bad("bad_field", "apiVersion must be an integer")
        if self.since is not None:
            parse_time(self.since, "since")
        if not all(s in SOURCES for s in self.sources):
            raise bad("bad_field", f"sources are among {list(SOURCES)}")

    @property
    def state(self) -> str:
        """The status as SPEC §17 names it (an older host's ``unknown`` is ``none``)."""
        return self.status if self.status in STATUSES else "none"

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "apiVersion": self.api_version}
        if self.since is not None:
            out["since"] = self.since
            out["sources"] = list(self.sources)
        return out


def parse_agent(obj: Mapping[str, Any]) -> AgentInfo | None:
    """The agent's part, if it reads (None: nothing usable; never a reason to drop the VM).

    A ``since`` or ``sources`` that does not read is left out with the other.
    """
    status: Any = obj.get("status")
    try:
        check_text(status, "agent status", MAX_STATUS_CHARS)
    except BadHostMessage:
        return None
    version = obj.get("apiVersion")
    version = version if is_int(version) else None
    since, listed = obj.get("since"), obj.get("sources")
    sources = _sources(listed) if isinstance(listed, list) else ()
    if since is None or sources is None:
        return checked(AgentInfo, _KNOWN.get(status, status), version, None, ())
    try:
        parse_time(since, "since")
    except BadHostMessage:
        return checked(AgentInfo, _KNOWN.get(status, status), version, None, ())
    return checked(AgentInfo, _KNOWN.get(status, status), version, since, sources)


def _sources(listed: list[Any]) -> tuple[str, ...] | None:
    """The sources as one shared tuple per combination; None if one is unknown."""
    try:
        return _SOURCE_LISTS[tuple(listed)]
    except (KeyError, TypeError):  # repeated, unknown, or not a string
        pass
    if not all(isinstance(s, str) and s in SOURCES for s in listed):
        return None
    return tuple(_KNOWN[s] for s in listed)


# The words the wire repeats for every VM, so that each is one string in memory.
_KNOWN = {word: word for word in (*STATUSES, *SOURCES)}
_SOURCE_LISTS = {
    listed: listed for listed in ((), *((s,) for s in SOURCES), SOURCES, tuple(reversed(SOURCES)))
}


@dataclass(frozen=True, **SLOTS)
class Confirmed:
    """The VMs whose guest confirmed its mapping since the cursor asked with: per
    source, each VM's newest confirmation in milliseconds since the epoch.

    VM ids are read as text only: the engine takes the confirmations of the VMs
    registered on the host that sent them and ignores the rest, so an id that is
    no UUID is never looked at twice (a poll carries hundreds of these)."""

    cursor: str
    at: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_text(self.cursor, "cursor", MAX_HASH_CHARS)

    def to_wire(self) -> dict[str, Any]:
        return {"cursor": self.cursor, "ms": {s: dict(vms) for s, vms in self.at.items()}}


def confirmed_wire(cursor: str, vms: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """The host's ``confirmed`` part from wall-clock seconds per VM and source."""
    at: dict[str, dict[str, int]] = {}
    for vm_id, times in vms.items():
        for source, seconds in times.items():
            at.setdefault(source, {})[vm_id] = round(seconds * 1000)
    return {"cursor": cursor, "ms": at}


def parse_confirmed(raw: Any) -> Confirmed | None:
    """The reply's ``confirmed`` part; None when absent. Unknown sources and times
    that are not milliseconds since the epoch are left out."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("ms", {}), dict):
        raise bad("bad_confirmed", "confirmed must be {cursor, ms: {source: {vmId: ms}}}")
    cursor = raw.get("cursor")
    if not isinstance(cursor, str):
        raise bad("bad_confirmed", "confirmed.cursor must be a string")
    at: dict[str, dict[str, int]] = {}
    count = 0
    for source, vms in raw.get("ms", {}).items():
        if source not in SOURCES or not isinstance(vms, dict):
            continue
        count += len(vms)
        if count > MAX_CONFIRMED:
            raise bad("too_many", f"more than {MAX_CONFIRMED} confirmations")
        at[_KNOWN[source]] = {
            vm: ms for vm, ms in vms.items() if type(ms) is int and 0 <= ms <= MAX_MS
        }
    return Confirmed(cursor, at)


def asked_cursor(params: Any) -> str | None:
    """The confirmations cursor a ``Host.getAllVmStats`` caller holds ("" for none)."""
    held = params.get("confirmed") if isinstance(params, dict) else None
    return held if isinstance(held, str) and len(held) <= MAX_HASH_CHARS else None
