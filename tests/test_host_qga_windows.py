"""qemu-ga in a Windows guest, through the real host (SPEC §20).

The fake qemu-ga answers with the recorded Windows shapes of tests/data/windows/
(see its README for where each shape comes from); the host is the real one.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import orjson

from diskname.host.qga import qga_path
from diskname.protocol import qga
from diskname.protocol.serials import candidates, swap_pairs

from .conftest import running_host, wait_until
from .test_host_qga import answer, fake_qemu_ga, sync_reply

DATA = Path(__file__).parent / "data" / "windows"
VOLUME_C = "\\\\?\\Volume{6b1c2d1e-0000-0000-0000-100000000000}\\"
VOLUME_RESERVED = "\\\\?\\Volume{6b1c2d1e-0000-0000-0000-007e00000000}\\"
VOLUME_D = "\\\\?\\Volume{0c3f6e2a-9b1d-4c55-8f0e-3a5b7c9d1e2f}\\"
VOLUME_E = "\\\\?\\Volume{5d8e1f40-2a6b-4c7d-9e0f-1a2b3c4d5e6f}\\"
SATA_SERIAL = "3c4d5e6f-7a8b-9c0d-1"
SWAPPED = swap_pairs(SATA_SERIAL)  # as Windows 7 and older read an ATA serial


def recorded(name: str) -> Any:
    return json.loads((DATA / name).read_text())["return"]


def drive(n: int) -> str:
    return f"\\\\.\\PhysicalDrive{n}"


EXPECTED = {
    "1a2b3c4d-5e6f-7a8b-9": {
        "name": drive(0),
        "source": "qemu-ga",
        "serial": "1a2b3c4d-5e6f-7a8b-9",
        "bus": "scsi",
        "address": {"pci": "0000:00:05.0", "scsi": "0:0:0:0"},
        "mountpoints": sorted(["C:\\", VOLUME_C, VOLUME_RESERVED]),
    },
    "2b3c4d5e-6f7a-8b9c-a": {  # trailing spaces and a NUL trimmed
        "name": drive(1),
        "source": "qemu-ga",
        "serial": "2b3c4d5e-6f7a-8b9c-a",
        "bus": "scsi",
        "address": {"pci": "0000:00:06.0", "scsi": "0:0:0:0"},
        "mountpoints": sorted(["D:\\", VOLUME_D]),
    },
    SWAPPED: {  # as reported: the engine tries the unswapped form (serials.candidates)
        "name": drive(2),
        "source": "qemu-ga",
        "serial": SWAPPED,
        "bus": "sata",
        "address": {"pci": "0000:00:1f.2"},  # no SCSI address on SATA: its zeroes are no address
        "mountpoints": sorted(["E:\\", VOLUME_E]),
    },
    "address:0:0:0:0": {  # serial "0": absent, the address decides
        "name": drive(3),
        "source": "qemu-ga",
        "bus": "scsi",
        "address": {"pci": "0000:00:07.0", "scsi": "0:0:0:0"},
    },
    "name:" + drive(4): {  # also "0", also at 0/0/0 (a virtio-blk disk): not collapsed
        "name": drive(4),
        "source": "qemu-ga",
        "bus": "scsi",
        "address": {"pci": "0000:00:08.0", "scsi": "0:0:0:0"},
    },
}


def test_the_recorded_answers_become_the_mapping() -> None:
    mapping = qga.mapping_from_disks(
        recorded("qga-get-disks.json"), recorded("qga-get-fsinfo.json")
    )
    assert mapping == EXPECTED


def test_without_fsinfo_the_disks_are_still_named() -> None:
    mapping = qga.mapping_from_disks(recorded("qga-get-disks.json"))
    assert {k: e["name"] for k, e in mapping.items()} == {k: e["name"] for k, e in EXPECTED.items()}
    assert not any("mountpoints" in e for e in mapping.values())


def test_fsinfo_alone_names_the_disks_with_volumes() -> None:
    mapping = qga.mapping_from_fsinfo(recorded("qga-get-fsinfo.json"))
    assert {e["name"]: e.get("mountpoints") for e in mapping.values()} == {
        drive(0): EXPECTED["1a2b3c4d-5e6f-7a8b-9"]["mountpoints"],
        drive(1): EXPECTED["2b3c4d5e-6f7a-8b9c-a"]["mountpoints"],
        drive(2): EXPECTED[SWAPPED]["mountpoints"],
    }


def test_a_serial_shared_by_two_disks_names_neither() -> None:
    disks = recorded("qga-get-disks.json")[:2]
    for disk in disks:
        disk["address"]["serial"] = "QM00001 "
    mapping = qga.mapping_from_disks(disks)
    assert sorted(mapping) == ["address:0:0:0:0", "name:" + drive(1)]
    assert not any("serial" in e for e in mapping.values())


def test_linux_answers_are_untouched_by_the_windows_rules() -> None:
    linux = [
        {"name": "/dev/vda", "partition": False, "address": {"bus-type": "virtio", "serial": "0"}},
        {"name": "/dev/vdb", "partition": False, "address": {"bus-type": "virtio", "serial": "0"}},
    ]
    assert qga.wants_fsinfo(linux)  # for its mountpoints (SPEC §17), not for Windows' rules
    assert qga.mapping_from_disks(linux) == {
        "0": {"name": "/dev/vda", "source": "qemu-ga", "serial": "0", "bus": "virtio"}
    }


class WindowsGuest:
    """A scripted qemu-ga answering as Windows does; ``hostile`` disks are added to get-disks."""

    def __init__(self) -> None:
        self.disks: list[dict[str, Any]] = recorded("qga-get-disks.json")
        self.fsinfo: list[dict[str, Any]] = recorded("qga-get-fsinfo.json")

    async def reply(self, cmd: dict[str, Any]) -> bytes:
        if cmd["execute"] == "guest-sync-delimited":
            return sync_reply(cmd)
        if cmd["execute"] == "guest-get-disks":
            return answer(self.disks)
        if cmd["execute"] == "guest-get-fsinfo":
            return answer(self.fsinfo)
        return orjson.dumps({"error": {"class": "CommandNotFound", "desc": "no"}}) + b"\n"

    def unplug(self, n: int) -> None:
        self.disks = [d for d in self.disks if d["name"] != drive(n)]
        self.fsinfo = [f for f in self.fsinfo if all(x["dev"] != drive(n) for x in f["disk"])]


HOSTILE = [
    "\\\\?\\GLOBALROOT\\Device\\Harddisk9\\DR9",
    "\\\\.\\PhysicalDrive1\\..\\C:",
    "\\\\.\\PhysicalDrive" + "9" * 300,
]


async def test_a_windows_guest_through_the_real_host(short_dir: Path) -> None:
    guest = WindowsGuest()
    guest.disks += [{"name": name, "partition": False} for name in HOSTILE]
    async with running_host(short_dir, channel_mode="connect", qga_interval=0.05) as host:
        vm = await host.create_vm(str(uuid.uuid4()), "windows", [])
        async with fake_qemu_ga(qga_path(host.config.channels_dir, vm.id), guest.reply) as seen:
            await wait_until(lambda: vm.mapping, timeout=10)
            assert dict(vm.mapping) == EXPECTED
            assert seen[:3] == ["guest-sync-delimited", "guest-get-disks", "guest-get-fsinfo"]
            assert set(vm.rejected) == {
                "qga_bad_name",
                "qga_bad_name_windows_namespace",
                "qga_bad_name_too_long",
            }
            assert vm.rejected["qga_bad_name_windows_namespace"] % 2 == 0  # two per answer
            before = vm.hash
            guest.unplug(1)
            await wait_until(lambda: "2b3c4d5e-6f7a-8b9c-a" not in vm.mapping, timeout=10)
            assert vm.hash != before
            assert {e["name"] for e in vm.mapping.values()} == {drive(n) for n in (0, 2, 3, 4)}


def test_the_recorded_sata_serial_is_byte_swapped() -> None:
    assert SWAPPED == "c3d4e5f67-8a-bc9d01-"
    assert list(candidates(SWAPPED)) == [SWAPPED, SATA_SERIAL]
