"""Batched hot-plug writes on real PostgreSQL: one transaction, each claim its own answer."""

from __future__ import annotations

import uuid

from diskname.engine.core.models import Attachment, DiskSpec, VmRow
from diskname.engine.db.plugs import Claim, Outcome
from diskname.engine.db.store import Store
from diskname.engine.errors import Conflict, MissingReference, NotFound
from diskname.protocol.disks import disk_serial


def new_id() -> str:
    return str(uuid.uuid4())


async def vm_with_root(store: Store, host_id: str) -> tuple[str, str]:
    vm_id, root = new_id(), new_id()
    att = Attachment(vm_id, root, new_id(), "virtio", False, None, None, None, None)
    spec = DiskSpec(f"root-{root[:8]}")
    await store.create_vm(VmRow(vm_id, "vm", "Up", host_id), att, disk_serial(root), spec)
    await store.mark_plugged(vm_id, root, att.device_id, None)
    return vm_id, root


def new_disk(vm_id: str) -> Claim:
    disk = new_id()
    return Claim(vm_id, disk, new_id(), "virtio", disk_serial(disk), f"d-{disk[:8]}", 1 << 30)


def existing(vm_id: str, disk: str) -> Claim:
    return Claim(vm_id, disk, new_id(), "virtio", None)


async def test_one_batch_of_claims_gives_each_its_own_answer(store: Store) -> None:
    host_id = new_id()
    await store.add_host(host_id, "h1", "127.0.0.1", 4000)
    (a, root_a), (b, root_b) = (
        await vm_with_root(store, host_id),
        await vm_with_root(store, host_id),
    )
    c, _ = await vm_with_root(store, host_id)
    await store.release_plug(b, root_b)  # b's root disk is attached but not plugged anywhere
    fresh, missing = new_disk(a), existing(b, new_id())
    claims = [
        fresh,
        existing(b, root_a),  # plugged into a
        missing,
        existing(a, root_a),  # attached to a already
        existing(a, root_b),  # free: a takes it...
        existing(c, root_b),  # ... so a second claim on it in the batch loses
    ]
    results = await store.claim_plugs(claims)
    assert results[0] == fresh.serial and results[4] == disk_serial(root_b)
    assert isinstance(results[1], Conflict) and "plugged into another VM" in str(results[1])
    assert isinstance(results[2], MissingReference) and missing.disk_id in str(results[2])
    assert isinstance(results[3], Conflict) and "already attached" in str(results[3])
    assert isinstance(results[5], Conflict) and "plugged into another VM" in str(results[5])
    plugged = {x.disk_id for x in await store.list_attachments(a) if x.active}
    assert plugged == {root_a, fresh.disk_id, root_b}  # claimed before the host is asked


async def test_outcomes_record_the_device_or_undo_the_claim_in_one_transaction(
    store: Store,
) -> None:
    host_id = new_id()
    await store.add_host(host_id, "h1", "127.0.0.1", 4000)
    vm_id, root = await vm_with_root(store, host_id)
    good, bad = new_disk(vm_id), new_disk(vm_id)
    assert [isinstance(r, str) for r in await store.claim_plugs([good, bad])] == [True, True]
    device = new_id()
    done, undone = await store.settle_plugs(
        [Outcome(good, device, "0000:00:06.0"), Outcome(bad, failed=True)]
    )
    assert isinstance(done, Attachment) and undone is None
    assert (done.device_id, done.address, done.active) == (device, "0000:00:06.0", True)
    plugged = await store.get_attachment(vm_id, good.disk_id)
    assert plugged is not None and plugged.disk is not None
    assert (plugged.disk.name, plugged.disk.status) == (good.name, "ok")  # locked until then
    left = {x.disk_id for x in await store.list_attachments(vm_id)}
    assert left == {root, good.disk_id}
    assert await store.disk_serial(bad.disk_id) is None  # the new disk went with its claim
    assert (await store.vm_states(host_id))[vm_id][0] is None  # the VM is fetched again


async def test_a_claim_for_a_vm_that_is_gone_is_a_404(store: Store) -> None:
    (result,) = await store.claim_plugs([new_disk(new_id())])
    assert isinstance(result, NotFound)
