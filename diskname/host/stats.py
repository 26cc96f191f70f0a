"""``Host.getAllVmStats`` as cached bytes and a digest (SPEC §5).

The engine asks every host for its VM stats every few seconds. Most of the
time nothing changed, so the host keeps each VM's entry with its encoded JSON,
and the whole list with a digest over it: an unchanged VM costs building and
comparing one small dict (no encoding), an unchanged host one string comparison
on the engine's side (the caller sends the digest it holds; the answer leaves
the list out when it still holds).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from ..protocol.host_wire import StatsEntry, stats_reply_wire
from .vm import Vm

Entry = Callable[[Vm], StatsEntry]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every VM's stats entry: the JSON list (as a fragment) and its digest."""

    digest: str
    entries: orjson.Fragment


def _digest(blobs: list[bytes]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for blob in blobs:
        h.update(blob)
        h.update(b"\n")
    return h.hexdigest()


class StatsCache:
    """The host's stats, re-encoded only for the VMs whose entry changed."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[StatsEntry, bytes]] = {}
        self._snapshot = Snapshot(_digest([]), orjson.Fragment(b"[]"))

    def snapshot(self, vms: Iterable[Vm], entry: Entry) -> Snapshot:
        """The stats of ``vms`` (each one's ``entry``) now; the same object if nothing moved."""
        entries: dict[str, tuple[StatsEntry, bytes]] = {}
        changed = False
        for vm in vms:
            fresh = entry(vm)
            old = self._entries.get(vm.id)
            if old is not None and old[0] == fresh:
                entries[vm.id] = old
            else:
                entries[vm.id] = (fresh, orjson.dumps(fresh.to_wire()))
                changed = True
        if changed or entries.keys() != self._entries.keys():
            blobs = [blob for _, blob in entries.values()]
            listing = orjson.Fragment(b"[" + b",".join(blobs) + b"]")
            self._snapshot = Snapshot(_digest(blobs), listing)
        self._entries = entries
        return self._snapshot


def stats_reply(snapshot: Snapshot, held: str | None, confirmed: Any = None) -> Any:
    """What ``Host.getAllVmStats`` answers a caller holding digest ``held``.

    None (no digest asked with): the list, as always (old engines). A digest:
    an object with the current digest, and the list under ``vms`` unless
    ``held`` is still the current one; ``confirmed`` beside them when asked.
    """
    if held is None:
        return snapshot.entries
    listing = None if held == snapshot.digest else snapshot.entries
    return stats_reply_wire(snapshot.digest, listing, confirmed)
