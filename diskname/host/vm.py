"""One VM on the host: its frozen state (devices, guest mapping, hash) and its live handle.

:class:`VmState` is a value: devices, each guest source's latest mapping, their
merge and the hash over devices *and* mapping (so the engine notices a name that
arrives after the device did). Only the registry makes new states and swaps them
into the VM's :class:`Vm` handle, so hashing, notifying and persisting happen in
one place. The handle also carries what is not hashed nor persisted: the agent's
heartbeat and API version, and the count of guest input dropped by reason.

A guest reset (reboot, power-off) drops every source's mapping: what the guest
said before no longer holds (letters can reorder at boot). The merged mapping of
before is *kept* (SPEC §17: the last names stay, marked stale while no source
is up) until a source reports in the new boot; from then on only reports of the
new boot make the mapping, so the pre-reset one can never win the merge.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from ..protocol.agent_wire import AGENT_API_VERSION
from ..protocol.guest_wire import AgentInfo
from ..protocol.hashing import vm_hash
from .devices import Device, InvalidDevice
from .freshness import Change, Freshness

log = logging.getLogger(__name__)

AGENT = "agent"
QEMU_GA = "qemu-ga"

GuestMapping = Mapping[str, Mapping[str, Any]]
_EMPTY: GuestMapping = MappingProxyType({})


def merge_mappings(sources: Mapping[str, GuestMapping]) -> dict[str, Mapping[str, Any]]:
    """One mapping from both guest sources, as a pure function of the two.

    The oVirt agent wins; qemu-ga fills in disks the agent does not name.
    Because the result depends only on each source's latest report (never on
    which arrived last), two sources cannot make the mapping, and so the
    hash, flip-flop (FACTS §4).
    """
    agent = sources.get(AGENT, _EMPTY)
    named = {entry.get("name") for entry in agent.values()}
    merged = {k: v for k, v in sources.get(QEMU_GA, _EMPTY).items() if v.get("name") not in named}
    merged.update(agent)
    return merged


@dataclass(frozen=True, slots=True)
class VmState:
    """What the host knows of a VM; build it with :meth:`new`, change it with ``with_*``."""

    id: str
    name: str
    devices: tuple[Device, ...] = ()
    sources: Mapping[str, GuestMapping] = field(default_factory=dict)
    mapping: GuestMapping = field(default_factory=dict)
    hash: str = ""
    # What the hypervisor says of the VM (libvirt: Up, Paused, Down...); not hashed.
    status: str = "Up"
    # The names of before a guest reset, shown while no source reported since.
    kept: GuestMapping = field(default_factory=dict)

    @classmethod
    def new(
        cls,
        vm_id: str,
        name: str,
        devices: tuple[Device, ...] = (),
        sources: Mapping[str, GuestMapping] | None = None,
        status: str = "Up",
        kept: GuestMapping | None = None,
    ) -> VmState:
        sources = dict(sources or {})
        kept = {} if sources else dict(kept or {})
        mapping = merge_mappings(sources) if sources else kept
        digest = vm_hash([d.to_json() for d in devices], mapping)
        return cls(vm_id, name, devices, sources, mapping, digest, status, kept)

    def with_devices(self, devices: tuple[Device, ...]) -> VmState:
        return VmState.new(self.id, self.name, devices, self.sources, self.status, self.kept)

    def with_status(self, status: str) -> VmState:
        return replace(self, status=status)

    def with_source(self, source: str, mapping: GuestMapping) -> VmState:
        sources = {**self.sources, source: mapping}
        merged = merge_mappings(sources)
        if merged == self.mapping:  # same hash: only the raw source moved
            return replace(self, sources=sources, kept={})
        return VmState.new(self.id, self.name, self.devices, sources, self.status)

    def without_source(self, source: str) -> VmState:
        """``source`` is gone: its mapping no longer counts (the last one's names are kept)."""
        if source not in self.sources:
            return self
        sources = {k: v for k, v in self.sources.items() if k != source}
        if not sources:
            return self.reset()
        return VmState.new(self.id, self.name, self.devices, sources, self.status)

    def reset(self) -> VmState:
        """The guest reset: every source's mapping goes; the names stay, kept (same hash)."""
        return replace(self, sources={}, kept=self.mapping)

    def device(self, disk_id: str) -> Device | None:
        return next((d for d in self.devices if d.disk_id == disk_id), None)

    def devices_json(self) -> list[dict[str, Any]]:
        return [d.to_json() for d in self.devices]

    def to_definition(self) -> dict[str, Any]:
        """What survives a restart (the state file)."""
        return {
            "vmId": self.id,
            "name": self.name,
            "devices": self.devices_json(),
            "guestDiskMapping": self.mapping,
            "mappingSources": self.sources,
            "status": self.status,
            "keptMapping": self.kept,
        }


class BadStateFile(ValueError):
    """A state file that is not a VM definition."""


def state_from_definition(data: Any) -> VmState:
    """A VM's state from its state file's JSON; :class:`BadStateFile` if it is not one."""
    if not isinstance(data, dict):
        raise BadStateFile("not a JSON object")
    vm_id, name = data.get("vmId"), data.get("name")
    if not isinstance(vm_id, str) or not isinstance(name, str):
        raise BadStateFile("vmId and name must be strings")
    raw_devices = data.get("devices", [])
    if not isinstance(raw_devices, list):
        raise BadStateFile("devices must be a list")
    try:
        devices = tuple(Device.from_json(d) for d in raw_devices)
    except InvalidDevice as exc:
        raise BadStateFile(f"a device is invalid: {exc}") from None
    mapping = data.get("guestDiskMapping") or {}
    kept = data.get("keptMapping") or {}
    # State written before there were two sources holds the agent's mapping only.
    sources = data.get("mappingSources") or ({AGENT: mapping} if mapping and not kept else {})
    if not _is_sources(sources) or not _is_sources({"kept": kept}):
        raise BadStateFile("mappingSources must map each source to a mapping of objects")
    status = data.get("status", "Up")
    if not isinstance(status, str):
        raise BadStateFile("status must be a string")
    return VmState.new(vm_id, name, devices, sources, status, kept)


def _is_sources(sources: Any) -> bool:
    return isinstance(sources, dict) and all(
        isinstance(m, dict) and all(isinstance(e, dict) for e in m.values())
        for m in sources.values()
    )


class Vm:
    """The live handle of one VM: its current state (swapped by the registry) and guest status."""

    def __init__(self, state: VmState) -> None:
        self._state = state
        self.api_version: int | None = None
        self.freshness = Freshness(time.time())
        self._rejected: Counter[str] = Counter()
        # (freshness revision, API version) and the agent part built from them (api.py).
        self.agent_memo: tuple[tuple[int, int | None], AgentInfo] | None = None

    @property
    def state(self) -> VmState:
        return self._state

    def _swap(self, state: VmState) -> VmState:
        """The registry's alone: replace the state, return the old one."""
        old, self._state = self._state, state
        return old

    @property
    def id(self) -> str:
        return self._state.id

    @property
    def name(self) -> str:
        return self._state.name

    @property
    def devices(self) -> tuple[Device, ...]:
        return self._state.devices

    @property
    def mapping(self) -> GuestMapping:
        return self._state.mapping

    @property
    def sources(self) -> Mapping[str, GuestMapping]:
        return self._state.sources

    @property
    def hash(self) -> str:
        return self._state.hash

    @property
    def rejected(self) -> Mapping[str, int]:
        """Guest input dropped so far, by reason (counted by :meth:`reject` alone)."""
        return MappingProxyType(self._rejected)

    def reject(self, reason: str, count: int = 1) -> None:
        """Count (and log) ``count`` pieces of guest input dropped for ``reason``.

        Every guest source of the VM (agent channel, qemu-ga, libvirt's guest
        info) counts here, so ``Host.getStats`` shows them all.
        """
        first = reason not in self._rejected
        self._rejected[reason] += count
        # The first of each kind is worth a warning; a flood of them is not.
        level = logging.WARNING if first else logging.DEBUG
        log.log(level, "VM %s: dropped guest input (%s)", self.id, reason)

    def agent_status(self) -> str:
        """``up``, ``unresponsive`` or ``none`` (:mod:`.freshness`)."""
        return self.freshness.status

    def heartbeat(self, now: float, reported_version: int) -> int:
        """Record a heartbeat; returns the API version both sides will speak."""
        self.source_seen(AGENT, now)
        self.api_version = max(0, min(reported_version, AGENT_API_VERSION))
        return self.api_version

    def source_seen(self, source: str, now: float, *, heartbeats: bool = True) -> None:
        """A guest source said something (``now``: the loop's clock)."""
        self._log(self.freshness.seen(source, now, time.time(), heartbeats=heartbeats))

    def source_confirmed(self, source: str, now: float, *, heartbeats: bool = True) -> None:
        """A guest source sent its mapping, changed or not: its names are confirmed now."""
        self._log(self.freshness.confirm(source, now, time.time(), heartbeats=heartbeats))

    def source_gone(self, source: str, why: str = "channel closed") -> None:
        self._log(self.freshness.gone(source, time.time(), why))

    def sources_reset(self, why: str) -> None:
        """The guest reset: no source vouches for its names until it reports again."""
        went, before, after = self.freshness.reset(time.time())
        status = before if before == after else f"{before} -> {after}"
        log.info(
            "VM %s: guest reset (%s): mappings dropped, sources gone: %s; guest agent %s",
            self.id, why, ", ".join(went) or "none", status,
        )  # fmt: skip

    def expire_sources(self, now: float, timeout: float) -> None:
        for change in self.freshness.expire(now, timeout, time.time()):
            self._log(change)

    def _log(self, change: Change | None) -> None:
        if change is None:
            return
        what = "connected" if change.came else f"gone ({change.why})"
        status = change.after
        if change.after != change.before:
            status = f"{change.before} -> {change.after}"
        log.info("VM %s: guest source %s %s; guest agent %s", self.id, change.source, what, status)
