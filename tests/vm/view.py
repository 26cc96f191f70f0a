"""The guest's whole view of its disks (SPEC §17), proven in a real guest; both hypervisors.

:func:`prove_guest_view` is the scenario tests/test_vm_e2e.py (QEMU) and
tests/test_libvirt_vm.py (libvirt) run on a booted guest they already have:

1. Three virtio disks hot-plugged through REST: X, A, B (X takes the lowest
   free PCIe root port, A and B the next ones). Each one's whole view (name,
   ``by_id``, ``by_path``, ``size``) must come back; ``by_id`` must be exactly
   the links ``ls -l /dev/disk/by-id`` shows for that device in the guest.
2. In the guest: one partition on A (sfdisk), ext4 on it, mounted at
   ``/data``; LVM on B (``pvcreate``, ``vgcreate``, ``lvcreate``). REST must
   show A's partition, its mountpoint and ``in_use: true``, B's holder (the
   logical volume ``/dev/mapper/...`` sysfs names) and ``in_use: true``.
3. ``umount /data``: A's ``in_use`` goes back to false.
4. X deleted, then the guest reboots (``systemctl reboot``; the hypervisor
   restarts it in place, the hot-plugged disks stay). At boot the kernel names
   virtio disks in PCI order, so A and B, named after X at hot-plug, now come
   one letter earlier: each attachment's ``logical_name`` must become the
   device whose serial (``/dev/disk/by-id/virtio-<serial>``) is that disk's.
   Between the reboot and the first report of the new boot the old names may
   not hold (issue 21): from the moment the reboot is issued REST is polled
   until the VM's ``guest_agent.status`` is not ``up`` and A's and B's
   attachments are ``stale: true``, then until it is ``up`` again with neither
   stale; the names it shows then must be the new boot's. The stale window
   (first stale to fresh again) is a figure.

Every wait polls REST with a deadline; the seconds each step took are returned
as figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..conftest import wait_until
from ..rest import Rest

VIEW_TIMEOUT = 30.0
REBOOT_TIMEOUT = 300.0
MOUNTPOINT = "/data"
VG, LV = "dnvg", "data"
BOOT_ID = "/proc/sys/kernel/random/boot_id"
WHOLE_VIEW = ("by_id", "by_path", "size")


class Shell(Protocol):
    """Runs a program in the guest (qemu-ga's ``guest-exec``)."""

    async def run(self, path: str, *args: str, timeout: float = ...) -> tuple[int, str, str]: ...

    def close(self) -> None: ...


Connect = Callable[[], Awaitable[Shell]]
Attachment = dict[str, Any]


async def sh(shell: Shell, script: str, timeout: float = 120.0) -> str:
    """``script`` run by the guest's /bin/sh (``set -e``); its stdout. Fails on non-zero exit."""
    code, out, err = await shell.run("/bin/sh", "-c", f"set -e\n{script}", timeout=timeout)
    assert code == 0, f"in the guest: {script!r} exited {code}: {err}"
    return out


def by_id_links(listing: str, device: str) -> set[str]:
    """The ``/dev/disk/by-id/`` links to ``device`` (``vdc``) in an ``ls -l`` of that folder."""
    found = re.findall(r"(\S+) -> \.\./\.\./(\S+)$", listing, re.M)
    return {f"/dev/disk/by-id/{link}" for link, target in found if target == device}


async def until(
    rest: Rest, vm: str, disk: str, ok: Callable[[Attachment], bool], timeout: float = VIEW_TIMEOUT
) -> tuple[Attachment, float]:
    """Poll the attachment until ``ok(attachment)``; it, and the seconds it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    last: list[Attachment] = []

    async def check() -> Attachment | None:
        found = await rest.attachment(vm, disk)
        last[:] = [found]
        return found if ok(found) else None

    try:
        found = await wait_until(check, timeout=timeout, interval=0.05)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the attachment: {last}") from None
    return found, loop.time() - start


def guest(att: Attachment) -> dict[str, Any]:
    """The attachment's guest view, ``{}`` while it has none."""
    return att.get("guest") or {}


def whole_view(att: Attachment) -> bool:
    guest_view = guest(att)
    return bool(att.get("logical_name")) and all(k in guest_view for k in WHOLE_VIEW)


async def plug(rest: Rest, vm: str) -> tuple[Attachment, float, float]:
    """A virtio disk hot-plugged through REST; seconds to its name and to its whole view."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    disk = await rest.hotplug(vm, "virtio")
    await rest.wait_name(vm, disk, timeout=VIEW_TIMEOUT)
    named = loop.time() - start
    att, _ = await until(rest, vm, disk, whole_view)
    return att, named, loop.time() - start


def _dev(att: Attachment) -> str:
    """``vdc`` for an attachment named ``/dev/vdc``."""
    return str(att["logical_name"]).removeprefix("/dev/")


async def _check_by_id(shell: Shell, att: Attachment) -> None:
    listing = await sh(shell, "ls -l /dev/disk/by-id")
    links = by_id_links(listing, _dev(att))
    assert f"/dev/disk/by-id/virtio-{att['disk']['serial']}" in links, (links, att)
    assert set(att["guest"]["by_id"]) == links, (att["guest"], listing)
    assert att["guest"]["size"] == att["disk"]["provisioned_size"], att


async def _ext4_on_a_partition(
    rest: Rest, shell: Shell, vm: str, a: Attachment, figures: dict[str, Any]
) -> None:
    dev = a["logical_name"]
    await sh(shell, f"echo , | sfdisk --quiet {dev}\nudevadm settle")
    parts = (await sh(shell, f"lsblk -lno NAME {dev}")).split()[1:]
    assert parts == [f"{_dev(a)}1"], parts
    expected = [f"/dev/{p}" for p in parts]
    _, took = await until(rest, vm, a["id"], lambda x: guest(x).get("partitions") == expected)
    figures["partition_to_view_s"] = round(took, 3)
    await sh(shell, f"mkfs.ext4 -q -F {expected[0]}\nmkdir -p {MOUNTPOINT}")
    loop = asyncio.get_running_loop()
    start = loop.time()
    await sh(shell, f"mount {expected[0]} {MOUNTPOINT}")
    a, _ = await until(rest, vm, a["id"], lambda x: guest(x).get("in_use") is True)
    figures["mount_to_in_use_s"] = round(loop.time() - start, 3)
    assert a["guest"]["mountpoints"] == [MOUNTPOINT], a["guest"]
    assert a["guest"]["partitions"] == expected, a["guest"]


async def _lvm_on(
    rest: Rest, shell: Shell, vm: str, b: Attachment, figures: dict[str, Any]
) -> None:
    dev = b["logical_name"]
    loop = asyncio.get_running_loop()
    start = loop.time()
    lvm = [f"pvcreate -q {dev}", f"vgcreate -q {VG} {dev}", f"lvcreate -q -y -n {LV} -L 64M {VG}"]
    await sh(shell, "\n".join(["export LVM_SUPPRESS_FD_WARNINGS=1", *lvm]))
    done = loop.time()
    figures["lvm_commands_s"] = round(done - start, 3)  # TCG: the commands themselves are slow
    held = (await sh(shell, f"ls /sys/block/{_dev(b)}/holders")).split()
    assert len(held) == 1 and held[0].startswith("dm-"), held
    dm_name = (await sh(shell, f"cat /sys/block/{held[0]}/dm/name")).strip()
    holder = f"/dev/mapper/{dm_name}"
    b, _ = await until(rest, vm, b["id"], lambda x: holder in guest(x).get("holders", []))
    figures["lvcreate_done_to_holder_s"] = round(loop.time() - done, 3)
    figures["holder"] = {"sysfs": held[0], "rest": b["guest"]["holders"]}
    assert b["guest"]["in_use"] is True, b["guest"]


async def _unmount(rest: Rest, shell: Shell, vm: str, a: Attachment) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await sh(shell, f"umount {MOUNTPOINT}")
    a, _ = await until(rest, vm, a["id"], lambda x: guest(x).get("in_use") is False)
    assert "mountpoints" not in a["guest"], a["guest"]
    assert a["guest"]["partitions"], a["guest"]  # still partitioned, just not in use
    return loop.time() - start


async def _boot_id(shell: Shell) -> str:
    return (await sh(shell, f"cat {BOOT_ID}", timeout=20)).strip()


async def reboot(shell: Shell, connect: Connect) -> tuple[Shell, float]:
    """Reboot the guest; a shell on the new boot (another boot id) and the seconds it took.

    ``--no-block``: systemctl returns once the reboot is queued, before qemu-ga
    is stopped, so its exit status still comes back (mostly: a lost answer is fine).
    """
    loop = asyncio.get_running_loop()
    start, before = loop.time(), await _boot_id(shell)
    with contextlib.suppress(AssertionError, OSError, TimeoutError):
        await shell.run("/usr/bin/systemctl", "--no-block", "reboot", timeout=20)
    shell.close()

    async def new_boot() -> Shell | None:
        try:
            fresh = await connect()
        except (AssertionError, OSError, TimeoutError):
            return None
        try:
            if await _boot_id(fresh) != before:
                return fresh
        except (AssertionError, OSError, TimeoutError):
            pass
        fresh.close()
        return None

    fresh = await wait_until(new_boot, timeout=REBOOT_TIMEOUT, interval=1.0)
    return fresh, loop.time() - start


async def guest_name_of(shell: Shell, att: Attachment) -> str:
    """The device the guest's by-id link for this disk's serial points to, checked in sysfs."""
    serial = att["disk"]["serial"]
    link = f"/dev/disk/by-id/virtio-{serial}"
    dev = (await sh(shell, f"udevadm settle\nreadlink -e {link}")).strip()
    sys_serial = (await sh(shell, f"cat /sys/block/{dev.removeprefix('/dev/')}/serial")).strip()
    assert sys_serial == serial, (dev, sys_serial, serial)
    return dev


async def _names_follow_serials(
    rest: Rest, shell: Shell, vm: str, disks: list[Attachment], timeout: float
) -> dict[str, str]:
    """Each attachment's REST name becomes the guest device with its serial; before -> after."""
    moves = {}
    for att in disks:
        name = await guest_name_of(shell, att)
        await until(rest, vm, att["id"], lambda x, n=name: x["logical_name"] == n, timeout)
        moves[att["logical_name"]] = name
    return moves


async def prove_guest_view(
    rest: Rest, vm: str, shell: Shell, connect: Connect
) -> tuple[dict[str, Any], Shell]:
    """The scenario above on ``vm``; its figures, and the shell on the rebooted guest."""
    figures: dict[str, Any] = {}
    loop = asyncio.get_running_loop()
    began = loop.time()
    x, _, _ = await plug(rest, vm)
    a, a_named, a_view = await plug(rest, vm)
    b, b_named, b_view = await plug(rest, vm)
    figures["plug_to_name_s"] = [round(a_named, 3), round(b_named, 3)]
    figures["plug_to_whole_view_s"] = [round(a_view, 3), round(b_view, 3)]
    for att in (a, b):
        await _check_by_id(shell, att)
    await _ext4_on_a_partition(rest, shell, vm, a, figures)
    await _lvm_on(rest, shell, vm, b, figures)
    figures["umount_to_not_in_use_s"] = round(await _unmount(rest, shell, vm, a), 3)

    await rest.ok("DELETE", f"/api/vms/{vm}/diskattachments/{x['id']}", status=204)
    await wait_until(lambda: _gone_in_guest(shell, x), timeout=VIEW_TIMEOUT, interval=0.2)
    window = asyncio.create_task(_stale_window(rest, vm, [a, b]))
    try:
        shell, took = await reboot(shell, connect)
    except BaseException:
        window.cancel()
        raise
    figures["reboot_s"] = round(took, 1)
    # What REST says the moment the new boot answers: until the agent reports
    # again, the names of the previous boot (kept, SPEC §17), not asserted.
    back = [await rest.attachment(vm, att["id"]) for att in (a, b)]
    figures["rest_when_guest_back"] = [
        {"logical_name": att["logical_name"], "stale": att.get("stale", False)} for att in back
    ]
    start = loop.time()
    moves = await _names_follow_serials(rest, shell, vm, [a, b], REBOOT_TIMEOUT)
    figures["reboot_to_names_right_s"] = round(loop.time() - start, 1)
    figures["names_before_to_after_reboot"] = moves
    figures["reordered"] = any(before != after for before, after in moves.items())
    stale = await window
    figures.update(stale)
    # Fresh again means the new boot's names, never the previous boot's.
    assert stale["names_when_fresh_again"] == list(moves.values()), (stale, moves)
    # And they stay: both at once, once every name has come back.
    now = [(await rest.attachment(vm, att["id"]))["logical_name"] for att in (a, b)]
    assert now == list(moves.values()), (now, moves)
    figures["total_s"] = round(loop.time() - began, 1)
    return figures, shell


async def _freshness(rest: Rest, vm: str, disks: list[Attachment]) -> tuple[str, list[Any]]:
    """The VM's guest agent status, and each attachment's (name, stale)."""
    status = (await rest.ok("GET", f"/api/vms/{vm}"))["guest_agent"]["status"]
    found = [await rest.attachment(vm, att["id"]) for att in disks]
    return status, [(att["logical_name"], att.get("stale", False)) for att in found]


async def _stale_window(rest: Rest, vm: str, disks: list[Attachment]) -> dict[str, Any]:
    """From the reboot on: the names go stale (agent not up), then fresh again (up)."""
    loop = asyncio.get_running_loop()
    issued = loop.time()

    async def when(stale: bool) -> list[Any] | None:
        status, names = await _freshness(rest, vm, disks)
        if stale:
            return names if status != "up" and all(s for _, s in names) else None
        return names if status == "up" and not any(s for _, s in names) else None

    went = await wait_until(lambda: when(True), timeout=REBOOT_TIMEOUT, interval=0.1)
    stale_at = loop.time()
    back = await wait_until(lambda: when(False), timeout=REBOOT_TIMEOUT, interval=0.1)
    fresh_at = loop.time()
    return {
        "reboot_issued_to_stale_s": round(stale_at - issued, 1),
        "stale_window_s": round(fresh_at - stale_at, 1),
        "names_while_stale": [name for name, _ in went],
        "names_when_fresh_again": [name for name, _ in back],
    }


async def _gone_in_guest(shell: Shell, att: Attachment) -> bool:
    serial = att["disk"]["serial"]
    out = await sh(shell, f"test -e /dev/disk/by-id/virtio-{serial} && echo here || true")
    return out.strip() != "here"
