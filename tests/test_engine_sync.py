"""The per-host sync state without sockets: the clock and the host's replies are ours."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from diskname.engine.core.sync import SETTLE, Batch, HostSync, Reply
from diskname.protocol import host_wire as wire

A, B, C = (str(uuid.UUID(int=n)) for n in (1, 2, 3))


def owned(**kw: Any) -> HostSync:
    sync = HostSync(**kw)
    sync.grant()
    sync.load({A: ("h-a", "Up"), B: ("h-b", "Up")})
    return sync


def stats(**hashes: str) -> list[dict[str, Any]]:
    ids = {"a": A, "b": B, "c": C}
    return [{"vmId": ids[k], "status": "Up", "hash": h} for k, h in hashes.items()]


def full(vm_id: str, vm_hash: str) -> dict[str, Any]:
    return {"vmId": vm_id, "status": "Up", "hash": vm_hash, "devices": [], "guestDiskMapping": {}}


def poll(sync: HostSync, raw: Any) -> list[tuple[str, str]]:
    """A ``Host.getAllVmStats`` result as the monitor hands it over: parsed, or the error."""
    try:
        reply: wire.StatsReply | wire.BadHostMessage = wire.parse_stats_reply(raw)
    except wire.BadHostMessage as exc:
        reply = exc
    return sync.on_stats(reply)


def answer(sync: HostSync, batch: Batch, raw: list[Any]) -> Reply:
    """A ``Host.getVMFullList`` result, parsed as the monitor does."""
    return sync.on_reply(batch, wire.parse_full_list(raw))


def fetch_all(sync: HostSync, now: float) -> Batch | None:
    sync.release_due(now)
    return sync.take_batch(now)


def test_only_vms_whose_hash_moved_are_fetched() -> None:
    sync = owned()
    poll(sync, stats(a="h-a", b="h-b"))
    assert sync.take_batch(0.0) is None
    poll(sync, stats(a="h-a", b="h-b2", c="h-c"))  # c is new: adopted
    batch = sync.take_batch(0.0)
    assert batch is not None and batch.vm_ids == (B, C)
    reply = answer(sync, batch, [full(B, "h-b2"), full(C, "h-c")])
    sync.on_stored(reply.reports)
    poll(sync, stats(a="h-a", b="h-b2", c="h-c"))
    assert sync.take_batch(0.1) is None


def test_nothing_is_fetched_before_the_stored_hashes_are_loaded_or_when_not_owned() -> None:
    sync = HostSync()
    sync.grant()
    sync.mark(A, "x")
    assert sync.take_batch(0.0) is None  # stale: the database's hashes come first
    sync.load({A: ("h-a", "Up")})
    sync.mark(A, "x")
    sync.revoke()
    assert sync.take_batch(0.0) is None


def test_status_changes_are_reported_once() -> None:
    sync = owned()
    entries = [{"vmId": A, "status": "Down", "hash": "h-a"}]
    assert poll(sync, entries) == [(A, "Down")]
    assert poll(sync, entries) == []
    assert poll(sync, "not a list") == [] and sync.counters["bad_stats"] == 1


def test_a_vm_in_an_action_is_not_fetched_and_an_overlapped_fetch_is_thrown_away() -> None:
    sync = owned()
    sync.mark(A, "h-a2")
    batch = sync.take_batch(0.0)
    assert batch is not None and batch.vm_ids == (A,)
    sync.begin_action(A)  # the engine plugs a disk while the fetch is in flight
    reply = answer(sync, batch, [full(A, "h-a2")])
    assert reply.reports == [] and reply.dropped["overlapped_action"] == 1
    assert sync.take_batch(0.1) is None  # still busy
    sync.end_action(A, 0.2)
    again = sync.take_batch(0.2)
    assert again is not None and again.vm_ids == (A,)


def test_a_vm_is_never_in_two_fetches_at_once() -> None:
    sync = owned()
    sync.mark(A, "h-a2")
    first = sync.take_batch(0.0)
    sync.mark(A, "h-a3")
    assert first is not None and sync.take_batch(0.0) is None
    answer(sync, first, [full(A, "h-a2")])
    second = sync.take_batch(0.0)
    assert second is not None and second.vm_ids == (A,)


def test_a_flapping_vm_is_fetched_a_bounded_number_of_times_and_its_last_state_is_fetched() -> None:
    sync = owned(fetch_rate=4.0, fetch_burst=4.0)
    fetches: list[float] = []
    now = 0.0
    for n in range(700 * 5):  # 700 hash changes a second for 5 s
        now = n / 700
        sync.on_notification(A, f"flap-{n}")
        batch = fetch_all(sync, now)
        if batch is not None:
            fetches.append(now)
            sync.on_stored(answer(sync, batch, [full(A, f"flap-{n}")]).reports)
    assert len(fetches) <= 4 + 4 * 5 + 1
    # Quiet now: the held change comes out within 1 / rate, with the latest state.
    due = sync.next_wakeup()
    assert due is not None and due - now <= 0.25 + 1e-9
    batch = fetch_all(sync, due)
    assert batch is not None and batch.vm_ids == (A,)


def test_deferred_vms_are_asked_again_and_a_vm_too_large_is_not_asked_until_it_changes() -> None:
    sync = owned()
    poll(sync, stats(a="h-a2", b="h-b2"))
    batch = sync.take_batch(0.0)
    assert batch is not None
    reply = answer(
        sync,
        batch,
        [{"vmId": A, "deferred": True}, {"vmId": B, "error": {"code": -32006, "message": "big"}}],
    )
    assert reply.dropped == {"deferred": 1, "vm_error": 1}
    again = sync.take_batch(1.0)
    assert again is not None and again.vm_ids == (A,)
    poll(sync, stats(b="h-b2"))
    assert sync.take_batch(2.0) is None  # the same hash is still too large
    poll(sync, stats(b="h-b3"))
    batch = sync.take_batch(3.0)
    assert batch is not None and B in batch.vm_ids


def test_what_was_not_asked_for_or_is_malformed_is_never_stored() -> None:
    sync = owned()
    sync.mark(A, "h-a2")
    batch = sync.take_batch(0.0)
    assert batch is not None
    reply = answer(sync, batch, [full(B, "zz"), {"vmId": "nope"}, 5, full(A, "h-a2")])
    assert [r.vm_id for r in reply.reports] == [A]
    assert reply.dropped == {"not_asked": 1, "bad_report": 2}


def test_vms_of_another_host_are_ignored_from_then_on() -> None:
    sync = owned()
    poll(sync, stats(c="h-c"))
    batch = sync.take_batch(0.0)
    assert batch is not None and batch.vm_ids == (C,)
    sync.on_foreign([C])
    poll(sync, stats(c="h-c2"))
    sync.on_notification(C, "h-c3")
    assert sync.take_batch(1.0) is None
    assert sync.counters["foreign_vm"] == 1


def test_without_notifications_an_action_is_followed_up() -> None:
    sync = owned(events=False, follow_ups=(0.1, 0.5))
    sync.begin_action(A)
    sync.end_action(A, 10.0)
    first = sync.take_batch(10.0)
    assert first is not None and first.vm_ids == (A,)
    sync.on_stored(answer(sync, first, [full(A, "h")]).reports)
    assert sync.take_batch(10.05) is None
    assert sync.next_wakeup() == 10.1
    assert fetch_all(sync, 10.1) is not None


def test_a_failed_fetch_leaves_the_vms_to_fetch() -> None:
    sync = owned()
    sync.mark(A, "h-a2")
    batch = sync.take_batch(0.0)
    assert batch is not None
    sync.on_fetch_failed(batch)
    again = sync.take_batch(0.0)
    assert again is not None and again.vm_ids == (A,)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["stats", "note", "take", "reply", "begin", "end", "tick"]),
            st.sampled_from([A, B, C]),
            st.integers(0, 3),
        ),
        max_size=60,
    )
)
def test_any_sequence_keeps_the_rules(ops: list[tuple[str, str, int]]) -> None:
    """Whatever happens: no VM in two fetches, no busy VM fetched, the last state fetched."""
    sync = owned()
    now, in_flight, busy = 0.0, [], set()
    for op, vm, n in ops:
        now += 0.05
        if op == "stats":
            poll(sync, [{"vmId": vm, "status": "Up", "hash": f"h{n}"}])
        elif op == "note":
            sync.on_notification(vm, f"h{n}")
        elif op == "take" and (batch := fetch_all(sync, now)) is not None:
            taken = {v for b in in_flight for v in b.vm_ids}
            assert not taken & set(batch.vm_ids) and not busy & set(batch.vm_ids)
            in_flight.append(batch)
        elif op == "reply" and in_flight:
            batch = in_flight.pop(0)
            sync.on_stored(answer(sync, batch, [full(v, f"h{n}") for v in batch.vm_ids]).reports)
        elif op == "begin" and vm not in busy:
            sync.begin_action(vm)
            busy.add(vm)
        elif op == "end" and vm in busy:
            sync.end_action(vm, now)
            busy.discard(vm)
    for batch in in_flight:
        sync.on_fetch_failed(batch)
    for vm in list(busy):
        sync.end_action(vm, now)
    sync.mark(A, "final")
    for _ in range(20):  # within a few damping periods, A is fetched
        now += 0.25
        if (batch := fetch_all(sync, now)) is not None and A in batch.vm_ids:
            return
        if batch is not None:
            sync.on_fetch_failed(batch)
    raise AssertionError("the last state of A was never fetched")


# -- the stats digest (SPEC §5) ------------------------------------------------


def listing(digest: str, **hashes: str) -> dict[str, Any]:
    return {"digest": digest, "vms": stats(**hashes)}


def test_an_unchanged_host_costs_one_comparison() -> None:
    sync = owned()
    assert sync.stats_params() == {"digest": "", "confirmed": ""}
    poll(sync, listing("d1", a="h-a", b="h-b"))
    assert sync.stats_params() == {"digest": "d1", "confirmed": ""}
    assert poll(sync, {"digest": "d1"}) == [] and not sync.wants_fetch
    assert sync.counters["stats_unchanged"] == 1


def test_a_host_confirms_its_registered_and_listed_vms_and_nobody_elses() -> None:
    """A VM the host just listed (registered once fetched) keeps its first confirmation;
    one the host never listed nor owns is no VM of its own: not kept."""
    sync = owned()
    d = str(uuid.UUID(int=4))
    ms = {"agent": {A: 1_000, C: 2_000, d: 3_000}}
    poll(
        sync, {**listing("d1", a="h-a", b="h-b", c="h-c"), "confirmed": {"cursor": "r:1", "ms": ms}}
    )
    assert sync.stats_params() == {"digest": "d1", "confirmed": "r:1"}
    assert [sorted(sync.agents.reported_at(vm)) for vm in (A, B, C, d)] == [
        ["agent"],
        [],
        ["agent"],
        [],
    ]
    later = {"agent": {C: 5_000, d: 6_000}}
    poll(sync, {"digest": "d1", "confirmed": {"cursor": "r:2", "ms": later}})
    assert sync.agents.reported_at(C)["agent"].timestamp() == 5.0
    assert sync.agents.reported_at(d) == {}


def test_a_vm_left_unstored_is_fetched_again_while_the_digest_holds() -> None:
    sync = owned()
    poll(sync, listing("d1", a="h-a", b="h-b2"))
    batch = sync.take_batch(0.0)
    assert batch is not None and batch.vm_ids == (B,)
    reply = answer(sync, batch, [full(B, "h-b2")])  # ... and the database refused the write
    poll(sync, {"digest": "d1"})
    again = sync.take_batch(1.0)
    assert again is not None and again.vm_ids == (B,)
    sync.on_stored(answer(sync, again, [full(B, "h-b2")]).reports)
    poll(sync, {"digest": "d1"})
    assert not sync.wants_fetch and reply.reports


def test_after_an_action_the_vm_is_fetched_again_though_the_host_did_not_change() -> None:
    sync = owned()
    poll(sync, listing("d1", a="h-a", b="h-b"))
    sync.begin_action(A)  # a plug the host refused: its stats do not move
    sync.end_action(A, 0.0, settle=True)
    batch = fetch_all(sync, SETTLE)
    assert batch is not None and batch.vm_ids == (A,)
    answer(sync, batch, [full(A, "h-a")])  # fetched, but the write failed
    poll(sync, {"digest": "d1"})
    again = sync.take_batch(SETTLE + 0.1)
    assert again is not None and again.vm_ids == (A,)
    sync.on_stored(answer(sync, again, [full(A, "h-a")]).reports)
    poll(sync, {"digest": "d1"})
    assert not sync.wants_fetch


def test_a_reload_or_a_digest_not_ours_asks_for_the_whole_list() -> None:
    sync = owned()
    poll(sync, listing("d1", a="h-a", b="h-b"))
    sync.load({A: ("h-a", "Up"), B: ("h-b", "Up")})
    assert sync.stats_params() == {"digest": "", "confirmed": ""}
    poll(sync, listing("d1", a="h-a", b="h-b"))
    poll(sync, {"digest": "other"})
    assert sync.stats_params() == {"digest": "", "confirmed": ""}
    assert sync.counters["stats_digest_unknown"] == 1


def test_an_old_host_answers_the_list_and_a_naive_poller_asks_for_it() -> None:
    sync = owned()
    poll(sync, stats(a="h-a", b="h-b2"))  # a host that ignores the digest
    assert sync.stats_params() == {"digest": "", "confirmed": ""}
    batch = sync.take_batch(0.0)
    assert batch is not None and batch.vm_ids == (B,)
    assert owned(hash_gate=False).stats_params() is None


class FakeHost:
    """Stats with a content digest, answered as a host of SPEC §5 does."""

    def __init__(self) -> None:
        self.hashes = {A: "h0", B: "h0", C: "h0"}

    def stats(self, params: dict[str, str] | None) -> Any:
        entries = [{"vmId": v, "status": "Up", "hash": h} for v, h in sorted(self.hashes.items())]
        digest = "/".join(h for _, h in sorted(self.hashes.items()))
        if params is None:
            return entries
        if params["digest"] == digest:
            return {"digest": digest}
        return {"digest": digest, "vms": entries}

    def full(self, batch: Batch) -> list[dict[str, Any]]:
        return [full(v, self.hashes[v]) for v in batch.vm_ids]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["change", "poll", "store", "lose", "refuse", "act", "reload"]),
            st.sampled_from([A, B, C]),
            st.integers(0, 3),
        ),
        max_size=60,
    )
)
def test_with_the_digest_every_vm_ends_at_the_hosts_hash(ops: list[tuple[str, str, int]]) -> None:
    """Whatever was lost on the way, once the host is quiet the engine catches up."""
    sync, host, now = HostSync(), FakeHost(), 0.0
    sync.grant()
    sync.load({v: ("h0", "Up") for v in (A, B, C)})
    for op, vm, n in ops:
        now += 0.3
        batch = fetch_all(sync, now) if op in ("store", "lose", "refuse") else None
        if op == "change":
            host.hashes[vm] = f"h{n}"
        elif op == "poll":
            poll(sync, host.stats(sync.stats_params()))
        elif op == "act":
            sync.begin_action(vm)
            sync.end_action(vm, now)
        elif op == "reload":
            sync.load({v: (sync.stored_hash(v), "Up") for v in (A, B, C)})
        if batch is not None and op == "store":
            sync.on_stored(answer(sync, batch, host.full(batch)).reports)
        elif batch is not None and op == "lose":
            sync.on_fetch_failed(batch)
        elif batch is not None:
            answer(sync, batch, host.full(batch))  # fetched, but the write failed
    for _ in range(40):  # the host is quiet now: polls and fetches that all work
        now += 1.0
        poll(sync, host.stats(sync.stats_params()))
        while (batch := fetch_all(sync, now)) is not None:
            sync.on_stored(answer(sync, batch, host.full(batch)).reports)
    assert {v: sync.stored_hash(v) for v in (A, B, C)} == host.hashes


def test_after_an_action_the_vm_is_fetched_once_when_the_guest_reports() -> None:
    sync = owned()
    sync.begin_action(A)
    sync.on_notification(A, "h-device")  # the host announces the plugged device
    sync.end_action(A, 1.0, settle=True)
    assert fetch_all(sync, 1.0) is None  # the action stored the device itself
    poll(sync, stats(a="h-device", b="h-b"))  # a poll saying the same: still no fetch
    assert fetch_all(sync, 1.1) is None
    sync.on_notification(A, "h-named")  # the guest named the disk
    batch = fetch_all(sync, 1.15)
    assert batch is not None and batch.vm_ids == (A,) and batch.wanted[A] == "h-named"
    sync.on_stored(answer(sync, batch, [full(A, "h-named")]).reports)
    assert fetch_all(sync, 1.0 + SETTLE) is None  # settled: nothing more


def test_after_an_action_a_silent_guest_is_fetched_when_the_settle_time_is_up() -> None:
    sync = owned()
    sync.begin_action(A)
    sync.end_action(A, 1.0, settle=True)
    assert fetch_all(sync, 1.0) is None and sync.next_wakeup() == 1.0 + SETTLE
    batch = fetch_all(sync, 1.0 + SETTLE)
    assert batch is not None and batch.vm_ids == (A,)


def test_after_an_action_a_guest_that_spoke_already_is_fetched_at_once() -> None:
    sync = owned()
    sync.begin_action(A)
    sync.on_notification(A, "h-device")
    sync.on_notification(A, "h-named")  # the guest was quicker than the action's end
    sync.end_action(A, 1.0, settle=True)
    batch = fetch_all(sync, 1.0)
    assert batch is not None and batch.vm_ids == (A,)
