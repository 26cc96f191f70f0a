"""What the engine knows of one host's VMs, and what to fetch next (sans-IO).

:class:`HostSync` is the per-host monitor's state with no I/O in it, the way
h11 keeps a connection's state apart from its sockets: the monitor feeds it
polls (:meth:`~HostSync.on_stats`), notifications, replies and the outcome of
its writes, and asks it what to fetch (:meth:`~HostSync.take_batch`) and when to
wake (:meth:`~HostSync.next_wakeup`). The caller brings the clock.

Rules it keeps:
- Hash gate: a VM is fetched only when the host reports a hash other than the
  one last stored (or none is known).
- Stats digest (SPEC §5): the poll sends the digest of the last full stats
  list; a host whose stats have not moved since answers with the digest alone,
  and only the VMs still behind their reported hash (normally none) are looked
  at again, so an unchanged host costs one comparison. Any reload of the stored
  hashes drops the digest: the next poll gets the whole list.
- A VM is never in two fetches at once, and never fetched while the engine's
  own action on it runs; a fetch that overlapped an action (its generation
  moved) is thrown away and the VM fetched again.
- Damping: at most ``fetch_burst`` fetches of one VM at once, then
  ``fetch_rate`` a second; a VM held back is fetched when its turn comes, with
  whatever its latest state is then (SPEC §12).
- A VM the host reports but that is registered on another host is ignored.
- Without notifications, a VM the engine just changed is fetched again a few
  times shortly after (the guest names a disk a moment after the plug).
- With notifications, a VM the engine just hot-plugged a disk into is fetched
  once the guest has had its say: on the first hash the host reports after the action (the
  plugged disk's name), or ``settle`` seconds after it at the latest. The one
  hash the host announced while the action ran (the bare device) is not
  fetched on its own: the action stored the device already. If two or more
  were announced meanwhile, the guest spoke already: fetch at once. A burst of
  plugs costs one fetch and one write per VM, not two.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ...damping import Damper
from .models import BadReport, VmReport, canonical_uuid, parse_report

FOLLOW_UP_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0)
SETTLE = 0.25  # seconds a VM the engine changed waits for the guest's own report
MAX_FETCH = 1000  # VMs asked for in one Host.getVMFullList


@dataclass(frozen=True, slots=True)
class Batch:
    """One ``Host.getVMFullList`` to make: the VMs and their generations when asked."""

    vm_ids: tuple[str, ...]
    generations: Mapping[str, int]
    wanted: Mapping[str, str | None]  # the hash each VM was asked for at


@dataclass(slots=True)
class Reply:
    """What came of a batch: reports to store, and counts of what was not."""

    reports: list[VmReport] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)


class HostSync:
    def __init__(
        self,
        *,
        hash_gate: bool = True,
        events: bool = True,
        fetch_rate: float = 4.0,
        fetch_burst: float = 6.0,
        follow_ups: tuple[float, ...] = FOLLOW_UP_DELAYS,
        settle: float = SETTLE,
    ) -> None:
        self.hash_gate, self.events, self._follow_up_delays = hash_gate, events, follow_ups
        self._settle = settle
        self.owned = False
        self.stale = True  # the stored hashes must be (re)loaded before they are trusted
        self._hashes: dict[str, str | None] = {}
        self._statuses: dict[str, str] = {}
        self._dirty: dict[str, str | None] = {}  # VM id -> the hash that made us want it
        self._generation: Counter[str] = Counter()
        self._busy: Counter[str] = Counter()  # VMs in an engine action (nested counts)
        self._fetching: set[str] = set()
        self._foreign: set[str] = set()
        self._unfetchable: dict[str, str | None] = {}  # VM id -> hash too large to fetch
        self._damper = Damper(fetch_rate, fetch_burst)
        self._cleared: set[str] = set()  # released by the damper, token already spent
        self._follow_ups: list[tuple[float, str]] = []  # a heap of (when, VM id)
        # VM id -> the hash announced while the engine's action ran, for VMs
        # waiting for the guest's report after it (see the module docstring).
        self._settling: dict[str, str | None] = {}
        self._announced: dict[str, set[str | None]] = {}  # hashes heard while busy
        self._digest: str | None = None  # of the last full stats list taken in
        self._reported: dict[str, str | None] = {}  # VM id -> hash in that list
        self._behind: set[str] = set()  # VMs of that list not (yet) at their hash here
        self.counters: Counter[str] = Counter()

    # -- ownership and the database's view -----------------------------------

    def grant(self) -> None:
        """This engine now owns the host: reload what the database knows first."""
        if not self.owned:
            self.owned, self.stale = True, True

    def revoke(self) -> None:
        self.owned = False
        self._dirty.clear()
        self._settling.clear()
        self._announced.clear()

    def load(self, states: Mapping[str, tuple[str | None, str]]) -> None:
        """(stored hash, status) of every VM registered on this host."""
        self._hashes = {vm: h for vm, (h, _) in states.items()}
        self._statuses = {vm: s for vm, (_, s) in states.items()}
        self._dirty.clear()
        self._foreign.clear()
        self._unfetchable.clear()
        self._settling.clear()
        self._announced.clear()
        self._forget_stats()
        self.stale = False

    def _forget_stats(self) -> None:
        """What the last stats list said no longer counts: ask for the whole list."""
        self._digest, self._reported, self._behind = None, {}, set()

    def forget_hash(self, vm_id: str) -> None:
        """Fetch the VM whatever its hash says (another engine acted on it)."""
        if self.owned and vm_id in self._statuses:
            self._hashes[vm_id] = None
            self._dirty[vm_id] = None
            self._fell_behind(vm_id)

    def _fell_behind(self, vm_id: str) -> None:
        if vm_id in self._reported:
            self._behind.add(vm_id)

    def forget_all(self) -> None:
        """Fetch every VM of the host whatever its hash says (its cluster's version changed)."""
        for vm_id in list(self._statuses):
            self.forget_hash(vm_id)

    @property
    def known(self) -> int:
        return len(self._hashes)

    def stored_hash(self, vm_id: str) -> str | None:
        """The hash last stored for the VM (None: unknown, or to be fetched anyway)."""
        return self._hashes.get(vm_id)

    # -- what the host says ----------------------------------------------------

    def stats_params(self) -> dict[str, str] | None:
        """Params of the next ``Host.getAllVmStats``: the digest held ("" for none).

        Without the hash gate (a naive poller, the bench's baseline) the whole
        list, every time.
        """
        return {"digest": self._digest or ""} if self.hash_gate else None

    def on_stats(self, result: Any) -> list[tuple[str, str]]:
        """A ``Host.getAllVmStats`` reply: marks changed VMs; returns status changes to store.

        The reply is the list (an old host, or one asked without a digest) or
        ``{"digest", "vms"?}``, ``vms`` left out when the digest sent still holds.
        """
        if not isinstance(result, dict):
            self._digest = None
            return self._take_list(result)
        digest, entries = result.get("digest"), result.get("vms")
        if entries is None:
            self._unchanged(digest)
            return []
        changed = self._take_list(entries)
        self._digest = digest if isinstance(digest, str) and isinstance(entries, list) else None
        return changed

    def _unchanged(self, digest: Any) -> None:
        """The host's stats are still those of our digest: look again at what is behind."""
        if self._digest is None or digest != self._digest:
            self.counters["stats_digest_unknown"] += 1  # not ours: ask for the list
            self._forget_stats()
            return
        self.counters["stats_unchanged"] += 1
        for vm_id in list(self._behind):
            if not self.mark(vm_id, self._reported.get(vm_id)):
                self._behind.discard(vm_id)

    def _take_list(self, entries: Any) -> list[tuple[str, str]]:
        if not isinstance(entries, list):
            self.counters["bad_stats"] += 1
            self._forget_stats()
            return []
        changed = []
        reported: dict[str, str | None] = {}
        behind: set[str] = set()
        for entry in entries:
            vm_id = self._vm_id(entry)
            if vm_id is None:
                continue
            status, raw_hash = entry.get("status"), entry.get("hash")
            known = self._statuses.get(vm_id)
            if known is not None and isinstance(status, str) and status != known:
                self._statuses[vm_id] = status
                changed.append((vm_id, status))
            vm_hash = reported[vm_id] = raw_hash if isinstance(raw_hash, str) else None
            if self.mark(vm_id, vm_hash):
                behind.add(vm_id)
        self._reported, self._behind = reported, behind
        return changed

    def _vm_id(self, entry: Any) -> str | None:
        """The entry's VM id in canonical text (an id we know already is taken as it is)."""
        if not isinstance(entry, dict):
            return None
        raw = entry.get("vmId")
        if isinstance(raw, str) and raw in self._statuses:
            return raw
        try:
            return canonical_uuid(raw)
        except ValueError:
            return None

    def on_notification(self, vm_id: str, vm_hash: str | None) -> None:
        if self.events and self.owned and not self.stale:
            self.mark(vm_id, vm_hash)

    def mark(self, vm_id: str, vm_hash: str | None) -> bool:
        """The host says the VM is at ``vm_hash`` (None: unknown): fetch it if that is news.

        True if it is to be fetched.
        """
        if vm_id in self._foreign or self._is_current(vm_id, vm_hash):
            return False
        if vm_id in self._unfetchable and self._unfetchable[vm_id] == vm_hash:
            return False
        if vm_id in self._settling:
            if vm_hash is not None and vm_hash == self._settling[vm_id]:
                return True  # what the action itself did: fetched when the guest speaks
            del self._settling[vm_id]
        if vm_id in self._busy:
            self._announced.setdefault(vm_id, set()).add(vm_hash)
        self._dirty[vm_id] = vm_hash
        return True

    def _is_current(self, vm_id: str, vm_hash: str | None) -> bool:
        if not self.hash_gate or vm_hash is None or vm_id not in self._hashes:
            return False
        return self._hashes[vm_id] == vm_hash

    # -- fetching ----------------------------------------------------------------

    def release_due(self, now: float) -> None:
        """Move VMs whose damping or follow-up time has come back into the dirty set."""
        for vm_id, held in self._damper.due(now):
            self._dirty.setdefault(vm_id, held or None)
            self._cleared.add(vm_id)  # its token is spent: the next batch takes it
        while self._follow_ups and self._follow_ups[0][0] <= now:
            _, vm_id = heapq.heappop(self._follow_ups)
            if not self.owned:
                continue
            if not self.events:
                self._dirty[vm_id] = None
            elif vm_id in self._settling:
                del self._settling[vm_id]
                self._dirty[vm_id] = None  # the guest stayed silent: fetch what there is

    def next_wakeup(self) -> float | None:
        """When :meth:`release_due` will next have something to release."""
        times = [t for t in (self._damper.next_due(),) if t is not None]
        if self._follow_ups:
            times.append(self._follow_ups[0][0])
        return min(times) if times else None

    @property
    def wants_fetch(self) -> bool:
        return bool(self._dirty)

    def take_batch(self, now: float, limit: int = MAX_FETCH) -> Batch | None:
        """The next VMs to fetch, or None. Each VM taken is in flight until :meth:`on_reply`."""
        if not self.owned or self.stale:
            return None
        chosen: dict[str, str | None] = {}
        for vm_id in sorted(self._dirty):
            if len(chosen) >= limit:
                break
            wanted = self._dirty[vm_id]
            if vm_id in self._busy or vm_id in self._fetching:
                continue  # fetched once the action or the fetch in flight is over
            del self._dirty[vm_id]
            if self._is_current(vm_id, wanted):
                continue
            if vm_id in self._cleared:
                self._cleared.discard(vm_id)
            elif not self._damper.offer(vm_id, wanted or "", now):
                self.counters["fetch_damped"] += 1
                continue
            chosen[vm_id] = wanted
        if not chosen:
            return None
        self._fetching.update(chosen)
        return Batch(tuple(chosen), {vm: self._generation[vm] for vm in chosen}, chosen)

    def on_reply(self, batch: Batch, result: Any) -> Reply:
        """The host's answer to ``batch``: what to store, and what to fetch again."""
        self._fetching.difference_update(batch.vm_ids)
        reply = Reply()
        answered: set[str] = set()
        for raw in result if isinstance(result, list) else []:
            self._entry(raw, batch, reply, answered)
        # Gone from the host since the poll: nothing to store, nothing to ask again.
        if gone := len(set(batch.vm_ids) - answered):
            reply.dropped["not_on_host"] += gone
        return reply

    def _entry(self, raw: Any, batch: Batch, reply: Reply, answered: set[str]) -> None:
        vm_id = raw.get("vmId") if isinstance(raw, dict) else None
        if isinstance(vm_id, str) and vm_id in batch.generations:
            answered.add(vm_id)
            if raw.get("deferred") is True:
                self._dirty.setdefault(vm_id, None)  # did not fit this reply: next one
                reply.dropped["deferred"] += 1
                return
            if isinstance(raw.get("error"), dict):
                self._unfetchable[vm_id] = batch.wanted[vm_id]
                reply.dropped["vm_error"] += 1
                return
        try:
            report = parse_report(raw)
        except BadReport:
            reply.dropped["bad_report"] += 1
            return
        if report.vm_id not in batch.generations:
            reply.dropped["not_asked"] += 1  # never store what was not asked for
        elif self.moved(batch, report.vm_id):
            self._dirty[report.vm_id] = None  # an action overlapped the fetch: again
            reply.dropped["overlapped_action"] += 1
        else:
            self._unfetchable.pop(report.vm_id, None)
            reply.reports.append(report)

    def moved(self, batch: Batch, vm_id: str) -> bool:
        """True if an action began on the VM since ``batch`` was taken."""
        return vm_id in self._busy or batch.generations[vm_id] != self._generation[vm_id]

    def on_stored(self, reports: Iterable[VmReport]) -> None:
        for report in reports:
            self._hashes[report.vm_id] = report.hash
            self._statuses[report.vm_id] = report.status
            if self._is_current(report.vm_id, self._reported.get(report.vm_id)):
                self._behind.discard(report.vm_id)

    def on_foreign(self, vm_ids: Iterable[str]) -> None:
        """The database says these VMs belong to another host: ignore them from now on."""
        for vm_id in vm_ids:
            self._foreign.add(vm_id)
            self._dirty.pop(vm_id, None)
            self._behind.discard(vm_id)
            self.counters["foreign_vm"] += 1

    def on_fetch_failed(self, batch: Batch) -> None:
        """No answer: the VMs stay as they were and are fetched again."""
        self._fetching.difference_update(batch.vm_ids)
        for vm_id in batch.vm_ids:
            self._dirty.setdefault(vm_id, None)

    # -- the engine's own actions ---------------------------------------------

    def begin_action(self, vm_id: str) -> None:
        self._busy[vm_id] += 1
        self._generation[vm_id] += 1

    def end_action(self, vm_id: str, now: float, *, settle: bool = False) -> None:
        """The action is over: whatever hash the host reports next is news.

        With notifications the host's own announcement of the change (held while
        the VM was busy) brings the fetch; for a hot-plug (``settle``) the guest's
        report that follows it does, or ``settle`` seconds. Without
        notifications, fetch now and follow up.
        """
        self._busy[vm_id] -= 1
        if self._busy[vm_id] <= 0:
            del self._busy[vm_id]
        self._generation[vm_id] += 1
        self._hashes[vm_id] = None
        self._fell_behind(vm_id)
        if not self.owned:
            return
        if not self.events:
            self._dirty[vm_id] = None
            for delay in self._follow_up_delays:
                heapq.heappush(self._follow_ups, (now + delay, vm_id))
            return
        announced = self._announced.pop(vm_id, set()) if vm_id not in self._busy else set()
        if not settle:
            return  # the announcement held in the dirty set brings the fetch
        if vm_id in self._busy or len(announced) >= 2:
            self._dirty[vm_id] = None  # another action runs, or the guest spoke already
            return
        self._settling[vm_id] = self._dirty.pop(vm_id, None)
        heapq.heappush(self._follow_ups, (now + self._settle, vm_id))
