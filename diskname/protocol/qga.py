"""The QEMU guest agent (qemu-ga) wire, client side, without I/O.

qemu-ga speaks QMP-style JSON: ``{"execute": cmd, "arguments": {...}}`` in,
``{"return": value}`` or ``{"error": {"class", "desc"}}`` out, one reply per
command, in order. A session may start in the middle of an earlier client's
exchange, so it opens with ``guest-sync-delimited``: we send a 0xFF byte (it
resets qemu-ga's JSON parser) and the command; qemu-ga answers with a 0xFF
byte (never valid inside UTF-8 JSON) and then ``{"return": id}``. Everything
before that sentinel, and every reply before the one carrying our id, is stale.

The guest is untrusted: replies are bounded by the line cap, and turning one
into a disk mapping (:func:`mapping_from_disks`, :func:`mapping_from_fsinfo`)
validates it with the agent wire's own limits. Bad input raises
:class:`RemoteProtocolError` with a ``reason``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from ..compat import SLOTS, jsonlib
from .agent_wire import parse_mapping
from .errors import remote
from .lines import MAX_LINE, NEED_DATA, LineDecoder, NeedData, Oversized, Truncated
from .names import is_windows_name, refusal
from .qga_windows import add_mountpoints, unshare_serials, volume_paths, windows_address
from .serials import clean, trim

SENTINEL = b"\xff"
SOURCE = "qemu-ga"
PCI_BUSES = ("virtio", "nvme")
LISTS = ("partitions", "holders", "mountpoints")
# Block devices that are not VM disks (FACTS §2).
_NOT_A_DISK = re.compile(r"^/dev/(loop|ram|zram|dm-|md|sr|nbd)")
# Partition names: sda1, vdb12, xvda2 -> strip the digits; nvme0n1p2,
# mmcblk0p1 -> strip "pN". nvme0n1 itself is a whole disk (a namespace).
_PARTITION = (
    re.compile(r"^(/dev/(?:nvme\d+n\d+|mmcblk\d+))p\d+$"),
    re.compile(r"^(/dev/(?:[hsv]d|xvd)[a-z]+)\d+$"),
)


@dataclass(frozen=True, **SLOTS)
class Synced:
    """qemu-ga answered our ``guest-sync-delimited``: what follows is ours."""

    sync_id: int


@dataclass(frozen=True, **SLOTS)
class Return:
    value: Any


@dataclass(frozen=True, **SLOTS)
class Error:
    error_class: str
    desc: str


Event = Union[Synced, Return, Error, NeedData]


def command(name: str, arguments: Mapping[str, Any] | None = None) -> bytes:
    """One command line, newline included."""
    obj: dict[str, Any] = {"execute": name}
    if arguments is not None:
        obj["arguments"] = dict(arguments)
    return jsonlib.dumps(obj) + b"\n"


class QgaConnection:
    """Client state of one qemu-ga session.

    Call :meth:`sync` first and send its bytes; feed what arrives to
    :meth:`receive_data` and read :meth:`next_event` until ``NEED_DATA``.
    Replies before :class:`Synced` are dropped. ``next_event`` raises
    :class:`RemoteProtocolError` for a reply it cannot read (that reply is
    consumed; the next call goes on with the one after it).
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._max_line = max_line
        self._lines = LineDecoder(max_line)
        self._sync_id: int | None = None
        self._seen_sentinel = False
        self.synced = False

    def sync(self, sync_id: int) -> bytes:
        """Start (or restart) a session; returns the bytes to send."""
        self._sync_id, self._seen_sentinel, self.synced = sync_id, False, False
        self._lines = LineDecoder(self._max_line)
        return SENTINEL + command("guest-sync-delimited", {"id": sync_id})

    def receive_data(self, data: bytes) -> None:
        """Bytes from qemu-ga; ``b""`` means it closed the connection."""
        *before, after = data.split(SENTINEL)
        if before:
            # A sentinel: whatever partial line came before it is stale.
            self._seen_sentinel = True
            self._lines = LineDecoder(self._max_line)
        if self._seen_sentinel or self.synced or not data:
            self._lines.receive_data(after if data else b"")

    def next_event(self) -> Event:
        while True:
            line = self._lines.next_event()
            if isinstance(line, NeedData):
                return NEED_DATA
            if isinstance(line, Oversized):
                raise remote("oversized", "a qemu-ga reply longer than the line cap")
            if isinstance(line, Truncated):
                raise remote("truncated", "qemu-ga closed the connection mid-reply")
            if not line.strip():
                continue
            event = self._reply(line)
            if self.synced:
                return event
            if isinstance(event, Return) and event.value == self._sync_id:
                self.synced = True
                return Synced(event.value)
            # A reply to someone else's command, from before our sync: drop it.

    def _reply(self, line: bytes) -> Return | Error:
        try:
            obj = jsonlib.loads(line)
        except jsonlib.JSONDecodeError:
            raise remote("invalid_json", "qemu-ga sent invalid JSON") from None
        if isinstance(obj, dict) and "return" in obj:
            return Return(obj["return"])
        if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
            err = obj["error"]
            return Error(str(err.get("class", ""))[:128], str(err.get("desc", ""))[:1024])
        raise remote("bad_reply", "a qemu-ga reply has neither return nor error")


# -- replies to disk mappings ------------------------------------------------


def disk_of(name: str) -> str:
    """The whole disk a partition name belongs to (``/dev/nvme0n1p2`` -> ``/dev/nvme0n1``)."""
    for pattern in _PARTITION:
        match = pattern.match(name)
        if match:
            return match.group(1)
    return name


def _pci(raw: Any) -> str | None:
    if not isinstance(raw, dict):
        return None
    parts = [raw.get(k) for k in ("domain", "bus", "slot", "function")]
    if not all(isinstance(p, int) and not isinstance(p, bool) and 0 <= p < 65536 for p in parts):
        return None
    domain, bus, slot, function = parts
    return f"{domain:04x}:{bus:02x}:{slot:02x}.{function:x}"


def address_of(raw: Any) -> str | dict[str, str] | None:
    """A GuestDiskAddress as the agent writes addresses (SPEC §3).

    Disks on their own PCI function (virtio-blk, NVMe) are named by it; disks
    behind a controller (SCSI, SATA, IDE) by ``host:channel:target:lun`` and
    the controller. qemu-ga does not report the SCSI host number; the host
    numbers its one controller 0, so 0 is what we write.
    """
    if not isinstance(raw, dict):
        return None
    pci = _pci(raw.get("pci-controller"))
    if raw.get("bus-type") in PCI_BUSES:
        return pci
    numbers = [raw.get(k) for k in ("bus", "target", "unit")]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
        return pci
    scsi = "0:{}:{}:{}".format(*numbers)
    return {"scsi": scsi, "pci": pci} if pci else {"scsi": scsi}


def _key(entry: Mapping[str, Any]) -> str:
    """The serial if the guest has one, else ``address:...``, else ``name:...``.

    The same keys the agent uses (``diskname.agent.records.mapping_key``): no
    disk serial looks like the fallbacks, so the engine matches those entries
    by their ``address`` field (SPEC §2).
    """
    serial = entry.get("serial")
    if serial:
        return str(serial)
    address = entry.get("address")
    if isinstance(address, dict):
        address = address.get("scsi") or address.get("pci")
    return f"address:{address}" if address else f"name:{entry['name']}"


def _entry(name: str, address: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "source": SOURCE}
    if isinstance(address, dict):
        windows = is_windows_name(name)
        serial = address.get("serial")
        # Windows: "0" means no serial (SPEC §20); Linux keeps what udev gave, trimmed.
        serial = (clean if windows else trim)(serial) if isinstance(serial, str) else None
        if serial:
            entry["serial"] = serial
        if isinstance(address.get("bus-type"), str):
            entry["bus"] = address["bus-type"]
        pci = _pci(address.get("pci-controller"))
        where = windows_address(address, pci) if windows else address_of(address)
        if where is not None:
            entry["address"] = where
    return entry


def _objects(value: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise remote("bad_reply", f"{what} must be a list of objects")
    return value


def _names(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, str)]


def _valid(entries: Iterable[dict[str, Any]], refused: Counter[str] | None) -> list[dict[str, Any]]:
    """The entries whose name passes the grammar (SPEC §12); the others counted by reason.

    Refused here, one by one, so that one hostile name (a 300-character one
    would break the key length cap) does not cost the guest its whole answer.
    """
    kept = []
    for entry in sorted(entries, key=lambda e: str(e["name"])):
        reason = refusal(entry["name"])
        if reason is None:
            kept.append(entry)
        elif refused is not None:
            refused[reason] += 1
    return kept


def _finish(
    entries: Iterable[dict[str, Any]], refused: Counter[str] | None
) -> dict[str, dict[str, Any]]:
    raw: dict[str, dict[str, Any]] = {}
    entries = _valid(entries, refused)
    unshare_serials(entries)
    for entry in entries:
        for key in LISTS:
            if key in entry:
                # The guest's order is not ours to hash: sort, so it cannot flip-flop.
                entry[key] = sorted(set(entry[key]))
        key = _key(entry)
        if key in raw and is_windows_name(entry["name"]):
            # Two Windows disks without a serial at one SCSI address (virtio-blk
            # disks all sit at 0/0/0): each is its own entry, by name.
            key = f"name:{entry['name']}"
        raw.setdefault(key, entry)
    # The agent wire's limits (entry count, text lengths, field types) apply
    # to qemu-ga's answers as much as to the agent's.
    return {key: e.to_json() for key, e in parse_mapping(raw).items()}


def wants_fsinfo(value: Any) -> bool:
    """Whether a ``guest-get-disks`` answer needs ``guest-get-fsinfo`` for its mountpoints.

    Windows names its volumes only there; on Linux it says which disks hold
    mounted filesystems (SPEC §17): any answer with a disk in it.
    """
    return isinstance(value, list) and any(isinstance(d, dict) for d in value)


def mapping_from_disks(
    value: Any, fsinfo: Any = None, refused: Counter[str] | None = None
) -> dict[str, dict[str, Any]]:
    """The mapping from a ``guest-get-disks`` return value (QEMU 5.2+).

    Whole disks only; partitions are listed under their disk, device-mapper
    and md devices under ``holders`` of the disks they sit on. ``fsinfo``, a
    ``guest-get-fsinfo`` answer, adds Windows disks' volumes as mountpoints.
    Disks whose name is not a device path are left out and counted in
    ``refused`` under the reason :func:`diskname.protocol.names.refusal` gives.
    """
    disks = _objects(value, "guest-get-disks")
    entries: dict[str, dict[str, Any]] = {}
    children: list[tuple[str, str, list[str]]] = []
    for disk in disks:
        name = disk.get("name")
        if not isinstance(name, str):
            raise remote("bad_reply", "a disk needs a string name")
        if disk.get("partition") is True or _NOT_A_DISK.match(name):
            kind = "partitions" if disk.get("partition") is True else "holders"
            children.append((kind, name, _names(disk.get("dependencies"))))
            continue
        entries[name] = _entry(name, disk.get("address"))
    for kind, child, parents in children:
        for parent in parents or [child]:
            owner = parent if parent in entries else disk_of(parent)
            if owner in entries and owner != child:
                entries[owner].setdefault(kind, []).append(child)
    if fsinfo is not None:
        add_mountpoints(entries, fsinfo)
        add_linux_mountpoints(entries, fsinfo)
    return _finish(entries.values(), refused)


def add_linux_mountpoints(entries: dict[str, dict[str, Any]], fsinfo: Any) -> None:
    """Put each Linux filesystem's mountpoint under every disk it sits on (SPEC §17).

    qemu-ga lists, per filesystem, the disks under it (through LVM and md:
    each ``dev`` is a partition or a whole disk); a partition counts for its
    disk. Anything not shaped as expected is skipped.
    """
    if not isinstance(fsinfo, list):
        return
    for fs in fsinfo:
        if not isinstance(fs, dict) or not isinstance(fs.get("mountpoint"), str):
            continue
        extents = fs.get("disk")
        for extent in extents if isinstance(extents, list) else []:
            dev = extent.get("dev") if isinstance(extent, dict) else None
            if not isinstance(dev, str) or not dev.startswith("/dev/"):
                continue
            entry = entries.get(dev) or entries.get(disk_of(dev))
            if entry is not None:
                entry.setdefault("mountpoints", []).append(fs["mountpoint"])


def mapping_from_fsinfo(
    value: Any, refused: Counter[str] | None = None
) -> dict[str, dict[str, Any]]:
    """The mapping from a ``guest-get-fsinfo`` return value (older qemu-ga).

    Only disks holding a mounted filesystem appear. A filesystem on a
    partition is reported under the partition's disk, with its mountpoint.
    ``refused`` as for :func:`mapping_from_disks`.
    """
    entries: dict[str, dict[str, Any]] = {}
    for fs in _objects(value, "guest-get-fsinfo"):
        for address in _objects(fs.get("disk", []), "fsinfo disk"):
            dev = address.get("dev")
            if isinstance(dev, str) and is_windows_name(dev):
                entry = entries.setdefault(dev, _entry(dev, address))
                entry.setdefault("mountpoints", []).extend(volume_paths(fs))
                continue
            if not isinstance(dev, str) or not dev.startswith("/dev/"):
                continue  # qemu-ga older than 5.2 gives no device name: nothing to report
            name = disk_of(dev)
            entry = entries.setdefault(name, _entry(name, address))
            if isinstance(fs.get("mountpoint"), str):
                entry.setdefault("mountpoints", []).append(fs["mountpoint"])
            if dev != name:
                entry.setdefault("partitions", []).append(dev)
    return _finish(entries.values(), refused)
