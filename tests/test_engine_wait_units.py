"""``?wait=logical_name`` without sockets: the query's rule, the keyed waiters, the hub."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from diskname.engine.core.waiting import DEFAULT_WAIT, MAX_WAIT, wait_timeout
from diskname.engine.errors import Invalid
from diskname.engine.events import EventHub, Seen

VM, DISK = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"


def named(new: str | None, event_id: int | None = 1, disk: str = DISK) -> dict[str, object]:
    return {"id": event_id, "vm_id": VM, "disk_id": disk, "old": None, "new": new}


def test_the_query_rule() -> None:
    assert wait_timeout(None, None) is None
    assert wait_timeout("logical_name", None) == DEFAULT_WAIT
    assert wait_timeout("logical_name", "2.5") == 2.5
    assert wait_timeout("logical_name", "300") == MAX_WAIT
    assert wait_timeout(None, "5") is None  # checked, changes nothing
    for bad in ("0", "-1", "300.01", "nan", "inf", "abc", "", "1" * 40):
        with pytest.raises(Invalid):
            wait_timeout("logical_name", bad)
        with pytest.raises(Invalid):
            wait_timeout(None, bad)
    with pytest.raises(Invalid, match="only 'logical_name'"):
        wait_timeout("active", "1")


@given(st.text(max_size=40), st.one_of(st.none(), st.text(max_size=40)))
def test_the_query_rule_takes_anything(wait: str, timeout: str | None) -> None:
    try:
        seconds = wait_timeout(wait, timeout)
    except Invalid:
        return
    assert seconds is not None and 0 < seconds <= MAX_WAIT


def test_seen_drops_a_second_copy_and_forgets_old_ids() -> None:
    seen = Seen(limit=2)
    assert seen.first_time(1) and not seen.first_time(1)
    assert seen.first_time(None) and seen.first_time(None)  # no id: always new
    assert seen.first_time(2) and seen.first_time(3)
    assert seen.first_time(1)  # forgotten: only the last two are kept


async def test_a_name_wakes_only_its_attachments_waiters() -> None:
    hub = EventHub()
    with (
        hub.waiters.waiting(VM, DISK) as mine,
        hub.waiters.waiting(VM.upper(), DISK) as same_key,
        hub.waiters.waiting(VM, "33333333-3333-3333-3333-333333333333") as other,
    ):
        assert len(hub.waiters) == 3
        hub.publish(named(None, 1))  # a name going away wakes nobody
        hub.publish(named("/dev/vdb", 2, disk="33333333-3333-3333-3333-333333333333"))
        assert other.done() and not mine.done()
        hub.publish(named("/dev/vdc", 3))
        assert mine.done() and same_key.done()
    assert len(hub.waiters) == 0


async def test_a_change_heard_twice_is_sent_once() -> None:
    hub = EventHub()
    with hub.subscription() as sub:
        hub.publish(named("/dev/vdb", 7))
        hub.publish(named("/dev/vdb", 7))  # the NOTIFY copy of our own write
        assert (await sub.next(0.01) or {}).get("id") == 7
        assert await sub.next(0.01) is None


async def test_closing_the_hub_answers_every_waiter_and_parks_no_new_one() -> None:
    hub = EventHub()
    with hub.waiters.waiting(VM, DISK) as parked:
        hub.close()
        await asyncio.wait_for(parked, 1)
    with hub.waiters.waiting(VM, DISK) as late:
        assert late.done()
