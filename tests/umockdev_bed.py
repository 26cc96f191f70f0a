"""A umockdev testbed through ctypes: fake sysfs devices that real libudev sees.

Works only in a process started under ``umockdev-wrapper`` (it preloads the
library that redirects /sys and the uevent socket into the testbed). ctypes
keeps the test dependencies to the Debian packages: no GObject introspection
build for the project's Python.

Also the guest hardware the agent tests use: a disk per bus laid out as the
kernel lays it out in sysfs (FACTS §2), with or without udev's properties.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from dataclasses import dataclass, field

_c = ctypes.c_char_p
_p = ctypes.c_void_p


def _load() -> ctypes.CDLL:
    lib = ctypes.CDLL("libumockdev.so.0")
    lib.umockdev_testbed_new.restype = _p
    lib.umockdev_testbed_get_root_dir.argtypes = [_p]
    lib.umockdev_testbed_get_root_dir.restype = _p
    lib.umockdev_testbed_add_devicev.argtypes = [
        _p,
        _c,
        _c,
        _c,
        ctypes.POINTER(_c),
        ctypes.POINTER(_c),
    ]
    lib.umockdev_testbed_add_devicev.restype = _p
    lib.umockdev_testbed_uevent.argtypes = [_p, _c, _c]
    lib.umockdev_testbed_remove_device.argtypes = [_p, _c]
    return lib


def _strv(pairs: dict[str, str]) -> ctypes.Array[ctypes.c_char_p]:
    items = [s.encode() for kv in pairs.items() for s in kv]
    return (_c * (len(items) + 1))(*items, None)


class Testbed:
    """Devices under a private /sys; uevents on the emulated netlink socket."""

    def __init__(self) -> None:
        self._lib = _load()
        self._glib = ctypes.CDLL("libglib-2.0.so.0")
        self._glib.g_free.argtypes = [_p]
        self._bed = self._lib.umockdev_testbed_new()
        self.root = self._string(self._lib.umockdev_testbed_get_root_dir(self._bed))

    def _string(self, ptr: int | None) -> str:
        assert ptr, "umockdev returned NULL"
        text = ctypes.string_at(ptr).decode()
        self._glib.g_free(ptr)
        return text

    def add(
        self,
        subsystem: str,
        name: str,
        parent: str | None = None,
        attributes: dict[str, str] | None = None,
        properties: dict[str, str] | None = None,
    ) -> str:
        """Add a device and announce it (an ``add`` uevent); returns its sys path."""
        ptr = self._lib.umockdev_testbed_add_devicev(
            self._bed,
            subsystem.encode(),
            name.encode(),
            parent.encode() if parent else None,
            _strv(attributes or {}),
            _strv(properties or {}),
        )
        return self._string(ptr)

    def write(self, sys_path: str, rel: str, data: bytes) -> None:
        """A sysfs attribute with any bytes in it (``dm/name``, a VPD page)."""
        path = os.path.join(self.root + sys_path, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)

    def link(self, sys_path: str, rel: str, target_sys_path: str) -> None:
        """A symlink attribute (``device``, ``holders/dm-0``) to another device."""
        path = os.path.join(self.root + sys_path, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(os.path.relpath(self.root + target_sys_path, os.path.dirname(path)), path)

    def uevent(self, sys_path: str, action: str) -> None:
        self._lib.umockdev_testbed_uevent(self._bed, sys_path.encode(), action.encode())

    def unplug(self, sys_path: str) -> None:
        """Announce the removal, then take the device out of sysfs, as the kernel does."""
        self.uevent(sys_path, "remove")
        self._lib.umockdev_testbed_remove_device(self._bed, sys_path.encode())
        # umockdev leaves the /sys/block link behind; a re-plug needs it gone.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self.root}/sys/block/{os.path.basename(sys_path)}")


@dataclass
class Guest:
    """Guest hardware on a testbed: disks per bus as sysfs shows them.

    ``udev=False`` leaves out everything udevd would add (``ID_*``,
    ``DEVLINKS``): what libudev shows in a container or a minimal guest.
    """

    bed: Testbed
    udev: bool = True
    diskseq: int = 0
    minors: int = 0
    _parents: dict[str, str] = field(default_factory=dict)

    def _parent(self, subsystem: str, name: str, parent: str | None = None) -> str:
        key = f"{parent}/{name}"
        if key not in self._parents:
            self._parents[key] = self.bed.add(subsystem, name, parent)
        return self._parents[key]

    def pci(self, address: str) -> str:
        return self._parent("pci", f"pci0000:00/{address}")

    def _block(
        self,
        parent: str,
        kname: str,
        device_link: str | None,
        attrs: dict[str, str],
        udev_props: dict[str, str],
        devtype: str = "disk",
    ) -> str:
        self.diskseq += 1
        self.minors += 16
        props = {"DEVNAME": kname, "DEVTYPE": devtype, "MAJOR": "8", "MINOR": str(self.minors)}
        if devtype == "disk":
            props["DISKSEQ"] = str(self.diskseq)
        if self.udev:
            props.update(udev_props)
        attrs = {"dev": f"8:{self.minors}", "size": "2097152", **attrs}
        path = self.bed.add("block", f"block/{kname}", parent, attrs, props)
        if device_link:
            self.bed.link(path, "device", device_link)
        return path

    def virtio_blk(self, pci: str, index: int, kname: str, serial: str) -> str:
        virtio = self._parent("virtio", f"virtio{index}", self.pci(pci))
        links = f"/dev/disk/by-path/pci-{pci} /dev/disk/by-diskseq/{self.diskseq + 1}"
        if serial:
            links = f"/dev/disk/by-id/virtio-{serial} " + links
        udev = {"ID_PATH": f"pci-{pci}", "DEVLINKS": links}
        if serial:
            udev["ID_SERIAL"] = serial
        return self._block(virtio, kname, virtio, {"serial": serial}, udev)

    def _scsi_device(self, host_parent: str, hctl: str) -> str:
        h, c, t, _ = hctl.split(":")
        host = self._parent("scsi", f"host{h}", host_parent)
        target = self._parent("scsi", f"target{h}:{c}:{t}", host)
        return self._parent("scsi", hctl, target)

    def _vpd(self, device: str, text: str) -> None:
        raw = text.encode()
        self.bed.write(device, "vpd_pg80", bytes([0, 0x80, 0, len(raw)]) + raw)

    def virtio_scsi(self, pci: str, index: int, hctl: str, kname: str, serial: str) -> str:
        virtio = self._parent("virtio", f"virtio{index}", self.pci(pci))
        device = self._scsi_device(virtio, hctl)
        self._vpd(device, serial)
        udev = {
            "ID_SERIAL": f"0QEMU_QEMU_HARDDISK_{serial}",
            "ID_SERIAL_SHORT": serial,
            "ID_SCSI_SERIAL": serial,
            "ID_BUS": "scsi",
            "DEVLINKS": f"/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_{serial} "
            f"/dev/disk/by-path/pci-{pci}-scsi-{hctl}",
        }
        return self._block(device, kname, device, {}, udev)

    def sata(self, pci: str, port: int, hctl: str, kname: str, serial: str) -> str:
        ata = self._parent("ata_port", f"ata{port}", self.pci(pci))
        device = self._scsi_device(ata, hctl)
        # ATA pads the serial to 20 characters; libata's VPD page carries the padding.
        self._vpd(device, serial.rjust(20))
        udev = {
            "ID_SERIAL": f"QEMU_HARDDISK_{serial}",
            "ID_SERIAL_SHORT": serial,
            "ID_BUS": "ata",
            "DEVLINKS": f"/dev/disk/by-id/ata-QEMU_HARDDISK_{serial}",
        }
        return self._block(device, kname, device, {}, udev)

    def nvme(self, pci: str, ctrl: int, namespaces: int, serial: str) -> list[str]:
        controller = self._parent("nvme", f"nvme/nvme{ctrl}", self.pci(pci))
        self.bed.write(controller, "serial", serial.ljust(20).encode() + b"\n")
        self.bed.write(controller, "address", pci.encode() + b"\n")
        udev = {"ID_SERIAL": f"QEMU NVMe Ctrl_{serial}", "ID_SERIAL_SHORT": serial}
        return [
            self._block(controller, f"nvme{ctrl}n{n}", controller, {}, udev)
            for n in range(1, namespaces + 1)
        ]

    def partition(self, disk: str, kname: str, number: int) -> str:
        return self._block(disk, kname, None, {"partition": str(number)}, {}, "partition")

    def dm(self, name: str, under: str) -> str:
        self.minors += 1
        props = {"DEVNAME": "dm-0", "DEVTYPE": "disk", "MAJOR": "254", "MINOR": "0"}
        path = self.bed.add("block", "virtual/block/dm-0", None, {"dev": "254:0"}, props)
        self.bed.write(path, "dm/name", name.encode() + b"\n")
        self.bed.link(under, "holders/dm-0", path)
        return path
