"""What qemu-ga on Windows answers, read into the mapping's terms (SPEC §20), without I/O.

qemu-ga's ``qga/commands-win32.c`` differs from the Linux build in ways that
matter here (FACTS §10):

- ``guest-get-disks`` names each disk ``\\\\.\\PhysicalDrive<N>`` and lists no
  partitions; its ``serial`` is the storage descriptor's field copied
  untrimmed (spaces, on some drivers ``0`` or one value for every disk).
- ``bus``/``target``/``unit`` are filled only for SCSI, IDE, RAID and SAS
  disks; for any other bus they are the zeroes of a fresh structure, not an
  address. ``pci-controller`` is the PCI function of the disk's parent: the
  disk's own function for virtio-blk (which Windows still reports as a SCSI
  disk at 0/0/0), the controller's for virtio-scsi, SATA and NVMe.
- ``guest-get-fsinfo`` lists volumes: ``name`` is the volume GUID path
  ``\\\\?\\Volume{GUID}\\``, ``mountpoint`` the first path it is mounted at
  (``D:\\``) or the label ``System Reserved`` when it has none, ``disk`` one
  address per extent with ``dev`` naming the disk.

So a Windows entry carries its ``bus`` and an ``address`` object with the PCI
function and, only where Windows filled one, the SCSI address; its serial is
cleaned (:mod:`diskname.protocol.serials`); and its mountpoints are the drive
letter paths and volume GUID paths of the volumes on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .names import is_windows_name, name_key, valid_windows_mountpoint
from .serials import drop_shared

# Buses for which qemu-ga asks Windows for the SCSI address (IOCTL_SCSI_GET_ADDRESS).
SCSI_ADDRESS_BUSES = ("scsi", "ide", "raid", "sas")


def _number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def windows_address(raw: Any, pci: str | None) -> dict[str, str] | None:
    """The ``address`` of a Windows disk: ``{"pci": ..., "scsi": "0:bus:target:unit"}``.

    Keys only for what Windows really filled in: no ``scsi`` on a bus that has
    none, no ``pci`` when qemu-ga wrote -1s. Like the Linux path, the SCSI
    host number is written 0 (the host numbers its one controller 0).
    """
    out: dict[str, str] = {}
    if pci:
        out["pci"] = pci
    numbers = [raw.get(k) for k in ("bus", "target", "unit")]
    if raw.get("bus-type") in SCSI_ADDRESS_BUSES and all(_number(n) for n in numbers):
        out["scsi"] = "0:{}:{}:{}".format(*numbers)
    return out or None


def volume_paths(fs: dict[str, Any]) -> list[str]:
    """A volume's mountpoint and GUID path, where each is a Windows path we accept."""
    paths = [fs.get("mountpoint"), fs.get("name")]
    return [p for p in paths if isinstance(p, str) and valid_windows_mountpoint(p)]


def add_mountpoints(entries: dict[str, dict[str, Any]], fsinfo: Any) -> None:
    """Put each volume's paths under ``mountpoints`` of every disk it spans.

    ``entries`` is keyed by disk name; ``fsinfo`` a ``guest-get-fsinfo``
    return value. Anything not shaped as expected is skipped: the mapping
    from ``guest-get-disks`` stands without mountpoints.
    """
    by_key = {name_key(name): entry for name, entry in entries.items() if is_windows_name(name)}
    if not isinstance(fsinfo, list):
        return
    for fs in fsinfo:
        if not isinstance(fs, dict) or not isinstance(fs.get("disk"), list):
            continue
        paths = volume_paths(fs)
        for extent in fs["disk"]:
            dev = extent.get("dev") if isinstance(extent, dict) else None
            entry = by_key.get(name_key(dev)) if isinstance(dev, str) else None
            if entry is not None and paths:
                entry.setdefault("mountpoints", []).extend(paths)


def unshare_serials(entries: Iterable[dict[str, Any]]) -> None:
    """Drop the ``serial`` of Windows disks that share it with another (virtio-win#353)."""
    windows = [e for e in entries if is_windows_name(e.get("name"))]
    kept = drop_shared({i: e.get("serial") for i, e in enumerate(windows)})
    for i, entry in enumerate(windows):
        if kept[i] is None:
            entry.pop("serial", None)
