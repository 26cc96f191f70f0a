"""The sync trackers one by one, and the whole against a lossy host (no sockets, our clock)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskname.damping import SWEEP_EVERY, Damper
from diskname.engine.core.sync import SETTLE, Batch, HostSync
from diskname.engine.core.sync.actions import Actions, After, after_action
from diskname.engine.core.sync.digest import StatsDigest
from diskname.engine.core.sync.known import Known
from diskname.engine.core.sync.ownership import _NEXT, Event, Ownership, Phase
from diskname.engine.core.sync.queue import FetchQueue
from diskname.engine.hosts.locks import VmLocks
from diskname.protocol import host_wire as wire

from .conftest import wait_until

A, B, C = (str(uuid.UUID(int=n)) for n in (1, 2, 3))


# -- ownership ---------------------------------------------------------------------


def test_every_phase_answers_every_event() -> None:
    assert set(_NEXT) == set(itertools.product(Phase, Event))


@pytest.mark.parametrize(
    ("events", "phase"),
    [
        ([Event.GRANT], Phase.LOADING),
        ([Event.GRANT, Event.LOADED], Phase.READY),
        ([Event.GRANT, Event.LOADED, Event.DISTRUST], Phase.LOADING),
        ([Event.GRANT, Event.LOADED, Event.GRANT], Phase.READY),
        ([Event.GRANT, Event.REVOKE, Event.LOADED], Phase.UNOWNED),
        ([Event.LOADED, Event.GRANT], Phase.LOADING),  # loaded while not ours: load again
    ],
)
def test_only_an_owner_that_loaded_is_ready(events: list[Event], phase: Phase) -> None:
    own = Ownership()
    for event in events:
        own.on(event)
    assert own.phase is phase
    assert own.ready is (phase is Phase.READY) and own.owned is (phase is not Phase.UNOWNED)


# -- what the database holds ------------------------------------------------------


def test_news_is_a_hash_not_stored_not_too_large_of_a_vm_of_ours() -> None:
    known = Known()
    known.load({A: ("h-a", "Up"), B: (None, "Up")})
    assert not known.is_news(A, "h-a") and known.is_news(A, "h-a2") and known.is_news(A, None)
    assert known.is_news(B, "h-b") and known.is_news(C, "h-c")  # unknown hash, new VM
    known.too_large(A, "big")
    assert not known.is_news(A, "big") and known.is_news(A, "small")
    known.stored(A, "small", "Up")
    assert known.is_news(A, "big")  # stored since: too large no longer holds
    known.foreign(C)
    assert not known.is_news(C, "h-c2")
    assert Known(hash_gate=False).is_news(A, "h-a")


def test_a_status_moves_only_for_a_registered_vm() -> None:
    known = Known()
    known.load({A: ("h", "Up")})
    assert not known.status_moved(A, "Up") and not known.status_moved(C, "Down")
    assert known.status_moved(A, "Down") and not known.status_moved(A, "Down")


# -- the stats digest --------------------------------------------------------------


def test_the_digest_names_what_is_behind_and_forgets_a_digest_not_its_own() -> None:
    digest = StatsDigest()
    assert digest.params() == {"digest": ""} and digest.unchanged("d1") is None
    digest.took("d1", {A: "h-a", B: "h-b"}, {B})
    assert digest.params() == {"digest": "d1"}
    digest.fell_behind(A)
    digest.fell_behind(C)  # not in the list: nothing to look at again
    assert digest.unchanged("d1") == {A: "h-a", B: "h-b"}
    digest.caught_up(B)
    assert digest.unchanged("d1") == {A: "h-a"}
    assert digest.unchanged("other") is None and digest.params() == {"digest": ""}


# -- the engine's actions ------------------------------------------------------------


@pytest.mark.parametrize(
    ("settle", "still_busy", "announced", "after"),
    [
        (False, False, 0, After.HELD),
        (False, True, 3, After.HELD),
        (True, False, 0, After.SETTLE),
        (True, False, 1, After.SETTLE),
        (True, False, 2, After.FETCH),
        (True, True, 0, After.FETCH),
    ],
)
def test_what_follows_an_action(
    settle: bool, still_busy: bool, announced: int, after: After
) -> None:
    assert after_action(settle=settle, still_busy=still_busy, announced=announced) is after


def test_generations_move_with_every_action_and_nested_actions_keep_what_they_heard() -> None:
    actions = Actions()
    seen = actions.generation(A)
    actions.begin(A)
    actions.begin(A)
    assert actions.moved(A, seen) and actions.is_busy(A)
    assert actions.heard(A, "h1") and actions.heard(A, "h2")
    assert actions.end(A, settle=True) is After.FETCH  # the other action still runs
    assert actions.end(A, settle=True) is After.FETCH  # two hashes heard: the guest spoke
    assert not actions.is_busy(A) and actions.moved(A, seen)
    assert not actions.moved(A, actions.generation(A))


def test_the_settling_hash_is_not_news_but_the_next_is() -> None:
    actions = Actions()
    actions.settle(A, "h-device")
    assert not actions.heard(A, "h-device")
    assert actions.heard(A, "h-named") and not actions.settle_over(A)
    actions.settle(B, None)
    assert actions.heard(B, None) and not actions.settle_over(B)  # None is never "the same"
    actions.settle(C, "h")
    assert actions.settle_over(C) and not actions.settle_over(C)


# -- the fetch queue -------------------------------------------------------------------


def never(vm_id: str, *_: Any) -> bool:
    return False


def test_a_vm_in_flight_or_skipped_stays_wanted_and_a_failed_fetch_comes_back() -> None:
    queue = FetchQueue(rate=100.0, burst=100.0)
    queue.want(A, "h1")
    assert queue.take(0.0, 10, never, never) == ({A: "h1"}, 0)
    queue.want(A, "h2")
    assert queue.take(0.0, 10, never, never) == ({}, 0)  # in flight
    queue.landed([A])
    assert queue.take(0.0, 10, lambda vm: vm == A, never) == ({}, 0)  # skipped: kept
    assert queue.take(0.0, 10, never, never) == ({A: "h2"}, 0)
    queue.failed([A])
    assert queue.take(0.0, 10, never, never) == ({A: None}, 0)


def test_current_vms_are_dropped_and_the_limit_holds() -> None:
    queue = FetchQueue(rate=100.0, burst=100.0)
    for vm in (A, B, C):
        queue.want(vm, "h")
    assert queue.take(0.0, 1, never, lambda vm, h: vm == A) == ({B: "h"}, 0)
    assert queue.take(0.0, 5, never, never) == ({C: "h"}, 0)
    assert not queue


def test_the_damper_holds_back_and_releases_the_latest_hash() -> None:
    queue = FetchQueue(rate=2.0, burst=1.0)
    queue.want(A, "h1")
    queue.take(0.0, 10, never, never)
    queue.landed([A])
    queue.want(A, "h2")
    assert queue.take(0.1, 10, never, never) == ({}, 1)
    due = queue.next_wakeup()
    assert due == pytest.approx(0.5)
    queue.release(due)
    assert queue.take(due, 10, never, never) == ({A: "h2"}, 0)  # its token already spent


def test_reminders_come_due_in_order() -> None:
    queue = FetchQueue(rate=1.0, burst=1.0)
    queue.remind(B, 2.0)
    queue.remind(A, 1.0)
    assert queue.next_wakeup() == 1.0 and queue.release(0.5) == []
    assert queue.release(3.0) == [A, B] and queue.next_wakeup() is None


# -- the whole, against a host that loses things ------------------------------------------


class LossyHost:
    """A SPEC §5 host that drops notifications, defers VMs and sends junk along."""

    def __init__(self, sync: HostSync) -> None:
        self.sync = sync
        self.hashes = {A: "h0", B: "h0", C: "h0"}
        self.database = dict(self.hashes)  # what the engine stored

    def change(self, vm_id: str, vm_hash: str, *, lost: bool) -> None:
        self.hashes[vm_id] = vm_hash
        if not lost:
            self.sync.on_notification(vm_id, vm_hash)

    def poll(self) -> None:
        entries = [{"vmId": v, "status": "Up", "hash": h} for v, h in sorted(self.hashes.items())]
        digest = "/".join(h for _, h in sorted(self.hashes.items()))
        params = self.sync.stats_params()
        unchanged = params is not None and params["digest"] == digest
        raw = {"digest": digest} if unchanged else {"digest": digest, "vms": [*entries, "junk"]}
        self.sync.on_stats(wire.parse_stats_reply(raw))

    def full(self, batch: Batch, *, defer: bool = False) -> list[Any]:
        if defer:
            return [{"vmId": v, "deferred": True} for v in batch.vm_ids]
        vms = [
            {
                "vmId": v,
                "status": "Up",
                "hash": self.hashes[v],
                "devices": [],
                "guestDiskMapping": {},
            }
            for v in batch.vm_ids
        ]
        return [5, {"vmId": "junk"}, *vms]

    def store(self, batch: Batch) -> None:
        reply = self.sync.on_reply(batch, wire.parse_full_list(self.full(batch)))
        self.sync.on_stored(reply.reports)
        self.database.update({r.vm_id: r.hash or "" for r in reply.reports})

    def load(self) -> None:
        self.sync.load({v: (h, "Up") for v, h in self.database.items()})


OPS = ["change", "lost", "poll", "store", "lose", "refuse", "defer", "act", "plug"]
OPS += ["reconnect", "revoke"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(OPS), st.sampled_from([A, B, C]), st.integers(0, 3)), max_size=80
    )
)
def test_a_lossy_host_and_a_restless_engine_still_converge(ops: list[tuple[str, str, int]]) -> None:
    """Notifications lost, fetches lost or deferred, writes refused, plugs, reconnects, revokes:
    once the host is quiet, every VM ends at the host's hash, in the sync state and the database."""
    sync = HostSync()
    host, now = LossyHost(sync), 0.0
    sync.grant()
    host.load()
    for op, vm, n in ops:
        now += 0.1
        sync.release_due(now)
        batch = sync.take_batch(now) if op in ("store", "lose", "refuse", "defer") else None
        if op in ("change", "lost"):
            host.change(vm, f"h{n}", lost=op == "lost")
        elif op == "poll":
            host.poll()
        elif op in ("act", "plug"):
            sync.begin_action(vm)
            if op == "plug":  # the host announces the bare device while the plug runs
                host.change(vm, f"dev{n}", lost=n == 0)
            sync.end_action(vm, now, settle=op == "plug")
        elif op == "reconnect":
            sync.mark_stale()
            host.load()
        elif op == "revoke":
            sync.revoke()
            sync.grant()
            host.load()
        if batch is None:
            continue
        if op == "store":
            host.store(batch)
        elif op == "lose":
            sync.on_fetch_failed(batch)
        else:  # refused by the database, or deferred by the host
            sync.on_reply(batch, wire.parse_full_list(host.full(batch, defer=op == "defer")))
    for _ in range(40):  # quiet now: polls and fetches that work
        now += max(1.0, SETTLE)
        host.poll()
        sync.release_due(now)
        while (batch := sync.take_batch(now)) is not None:
            host.store(batch)
    assert {v: sync.stored_hash(v) for v in (A, B, C)} == host.hashes == host.database
    host.poll()  # and a host at rest costs no fetch
    sync.release_due(now + 10.0)
    assert sync.take_batch(now + 10.0) is None


def test_the_damper_keeps_buckets_only_for_vms_that_changed_lately() -> None:
    damper = Damper(rate=4.0, burst=4.0)
    for vm in (A, B, C):
        assert damper.offer(vm, "h1", 0.0)
    assert len(damper) == 3
    sent = [damper.offer(C, "h2", SWEEP_EVERY) for _ in range(5)]  # C keeps changing
    assert sent == [True] * 4 + [False]  # its bucket is empty and one change is held
    assert len(damper) == 1  # A and B were full again: swept
    assert damper.due(SWEEP_EVERY + 1.0) == [(C, "h2")]  # the held change survives


async def test_a_vm_lock_lives_only_while_held_or_awaited() -> None:
    locks = VmLocks()
    order: list[str] = []

    async def second() -> None:
        async with locks.hold(A):
            order.append("second")

    async with locks.hold(A):
        waiter = asyncio.create_task(second())
        # The waiter queues on the held lock: one entry, two users.
        await wait_until(lambda: locks._entries[A].users == 2)
        assert len(locks) == 1
        order.append("first")
    await waiter
    assert order == ["first", "second"] and len(locks) == 0


def test_a_quiet_host_wakes_once_to_sweep_its_fetch_damper() -> None:
    queue = FetchQueue(rate=4.0, burst=4.0)
    queue.want(A, "h")
    assert queue.take(0.0, 10, never, never) == ({A: "h"}, 0)
    queue.landed([A])
    assert queue.next_wakeup() == SWEEP_EVERY
    queue.release(SWEEP_EVERY)
    assert queue.next_wakeup() is None  # nothing held, nothing left to sweep
