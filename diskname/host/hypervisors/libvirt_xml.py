"""libvirt domain XML, both ways, without libvirt: what a domain has, what to plug.

Reading (:func:`parse_domain`): the disks of a domain's live (or inactive) XML
with their ``<serial>``, ``<target dev bus>``, ``<alias>`` and ``<address>``;
the agent channel (a ``<channel type='unix'>`` whose virtio target is named
``ovirt-guest-agent.0``, SPEC §13); whether qemu-ga has a channel. Writing
(:func:`disk_xml`): the ``<disk>`` element a hot-plug attaches, with the
device's serial and a libvirt *user alias* (``ua-<diskId>``) that names the
diskname disk in every later live XML, so the host needs no state of its own
to recognise the disks it plugged.

The XML comes from libvirtd, not from a guest; still, anything missing or
malformed in it makes that element be skipped, never a crash.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

AGENT_PORTS = ("ovirt-guest-agent.0", "com.redhat.rhevm.vdsm")  # SPEC §3: current, legacy
QGA_PORT = "org.qemu.guest_agent.0"
USER_ALIAS = "ua-"
DISK_DEVICES = ("disk", "lun")  # cdroms and floppies are not VM disks here
# diskname interface -> libvirt <target bus>, and the prefix of its target names.
BUSES = {"virtio": "virtio", "virtio_scsi": "scsi", "sata": "sata", "nvme": "nvme"}
TARGET_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "nvme": "nvme0n"}
# libvirt <target bus> -> diskname interface (SPEC §7's four). IDE is ATA as SATA is;
# a SCSI disk on any controller model is virtio_scsi's kind. Other buses (usb, sd,
# xen, fdc) are left out: no interface says what they are.
INTERFACES = {"virtio": "virtio", "scsi": "virtio_scsi", "sata": "sata", "ide": "sata",
              "nvme": "nvme"}  # fmt: skip
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


class BadDomainXml(ValueError):
    """Not a libvirt domain description."""


@dataclass(frozen=True, slots=True)
class DomainDisk:
    """One ``<disk>`` of a domain, as libvirt describes it."""

    target: str
    bus: str
    serial: str | None
    alias: str | None
    address: str | None
    source: str  # what it is backed by ("file:/x.qcow2", "volume:pool/vol", "" when empty)
    iface: str
    xml: str  # the element itself: what a detach sends back

    @property
    def user_disk_id(self) -> str | None:
        """The diskname disk id in a ``ua-<uuid>`` alias (a disk diskname plugged), else None."""
        if not self.alias or not self.alias.startswith(USER_ALIAS):
            return None
        text = self.alias[len(USER_ALIAS) :]
        try:
            return text if str(uuid.UUID(text)) == text else None
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class AgentChannel:
    """Where the host reaches the guest agent, and how (SPEC §4 channel modes)."""

    path: Path
    mode: str  # "connect": QEMU serves the socket (source mode='bind'); "listen": we do


@dataclass(frozen=True, slots=True)
class Domain:
    uuid: str
    name: str
    disks: tuple[DomainDisk, ...]
    agent: AgentChannel | None
    qemu_ga: bool
    targets: frozenset[str] = frozenset()  # every disk's, cdroms included: taken names

    def disk_by_alias(self, alias: str) -> DomainDisk | None:
        return next((d for d in self.disks if d.alias == alias), None)


def _attr(element: ET.Element | None, name: str) -> str | None:
    if element is None:
        return None
    value = element.get(name)
    return value if value else None


def _hex(element: ET.Element, name: str) -> int:
    return int(element.get(name) or "0", 0)


def address_text(element: ET.Element | None) -> str | None:
    """A device ``<address>`` as the host writes addresses (vm.py): PCI or SCSI-like."""
    if element is None:
        return None
    try:
        if element.get("type") == "pci":
            parts = [_hex(element, k) for k in ("domain", "bus", "slot", "function")]
            return "{:04x}:{:02x}:{:02x}.{:x}".format(*parts)
        if element.get("type") == "drive":
            parts = [_hex(element, k) for k in ("controller", "bus", "target", "unit")]
            return "{}:{}:{}:{}".format(*parts)
    except ValueError:
        return None
    return None


def _source(disk: ET.Element) -> str:
    source = disk.find("source")
    if source is None:
        return ""
    kind = disk.get("type", "file")
    if kind == "volume":
        return f"volume:{source.get('pool', '')}/{source.get('volume', '')}"
    if kind == "network":
        return f"network:{source.get('protocol', '')}:{source.get('name', '')}"
    for key in ("file", "dev", "dir", "name"):
        if source.get(key):
            return f"{kind}:{source.get(key)}"
    return ""


def _disk(element: ET.Element) -> DomainDisk | None:
    if element.get("device", "disk") not in DISK_DEVICES:
        return None
    target = element.find("target")
    dev, bus = _attr(target, "dev"), _attr(target, "bus")
    if dev is None or bus is None or bus not in INTERFACES:
        return None
    serial = element.findtext("serial")
    address = element.find("address")
    return DomainDisk(
        target=dev,
        bus=bus,
        serial=serial.strip() if serial and serial.strip() else None,
        alias=_attr(element.find("alias"), "name"),
        address=address_text(address),
        source=_source(element),
        iface=INTERFACES[bus],
        xml=ET.tostring(element, encoding="unicode"),
    )


def _channel(devices: ET.Element, port: str) -> ET.Element | None:
    for channel in devices.findall("channel[@type='unix']"):
        target = channel.find("target")
        if target is not None and target.get("type") == "virtio" and target.get("name") == port:
            return channel
    return None


def agent_channel(devices: ET.Element) -> AgentChannel | None:
    for port in AGENT_PORTS:
        channel = _channel(devices, port)
        source = channel.find("source") if channel is not None else None
        path = _attr(source, "path")
        if source is not None and path:
            mode = "listen" if source.get("mode") == "connect" else "connect"
            return AgentChannel(Path(path), mode)
    return None


def parse_domain(text: str) -> Domain:
    """The parts of a domain's XML the host uses; :class:`BadDomainXml` if it is none."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise BadDomainXml(f"not XML: {exc}") from None
    domain_uuid, name = root.findtext("uuid"), root.findtext("name")
    if root.tag != "domain" or not domain_uuid or not name:
        raise BadDomainXml("a domain needs <uuid> and <name>")
    devices = root.find("devices")
    if devices is None:
        devices = ET.Element("devices")
    disks = [d for d in (_disk(e) for e in devices.findall("disk")) if d]
    try:
        canonical = str(uuid.UUID(domain_uuid.strip()))
    except ValueError:
        raise BadDomainXml(f"not a UUID: {domain_uuid!r}") from None
    return Domain(
        uuid=canonical,
        name=name.strip(),
        disks=tuple(sorted(disks, key=lambda d: _target_key(d.target))),
        agent=agent_channel(devices),
        qemu_ga=_channel(devices, QGA_PORT) is not None,
        targets=frozenset(t for e in devices.findall("disk/target") if (t := e.get("dev"))),
    )


def _target_key(target: str) -> tuple[str, int, str]:
    # vda < vdb < vdaa (the kernel's order), nvme0n2 < nvme0n10.
    return (target[:2], len(target), target)


def target_names(prefix: str) -> Iterable[str]:
    """Target names in the kernel's order: ``vda`` .. ``vdz``, ``vdaa`` .. ``vdzz``."""
    if prefix.endswith("n"):  # nvme0n1, nvme0n2, ...
        yield from (f"{prefix}{n}" for n in range(1, 1000))
        return
    yield from (prefix + a for a in _LETTERS)
    yield from (prefix + a + b for a in _LETTERS for b in _LETTERS)


def free_target(bus: str, taken: Iterable[str]) -> str:
    """The first target name of ``bus`` that no disk of the domain uses."""
    used = set(taken)
    prefix = TARGET_PREFIX.get(bus, "sd")
    for name in target_names(prefix):
        if name not in used:
            return name
    raise ValueError(f"no free {bus} target name")


@dataclass(frozen=True, slots=True)
class FileImage:
    path: Path


@dataclass(frozen=True, slots=True)
class PoolVolume:
    pool: str
    volume: str


def disk_xml(
    *, target: str, bus: str, serial: str, alias: str, image: FileImage | PoolVolume
) -> str:
    """The ``<disk>`` a hot-plug attaches: a qcow2 image with the device's serial."""
    kind = "file" if isinstance(image, FileImage) else "volume"
    disk = ET.Element("disk", type=kind, device="disk")
    ET.SubElement(disk, "driver", name="qemu", type="qcow2")
    if isinstance(image, FileImage):
        ET.SubElement(disk, "source", file=str(image.path))
    else:
        ET.SubElement(disk, "source", pool=image.pool, volume=image.volume)
    ET.SubElement(disk, "target", dev=target, bus=bus)
    ET.SubElement(disk, "serial").text = serial
    ET.SubElement(disk, "alias", name=alias)
    return ET.tostring(disk, encoding="unicode")


def volume_xml(name: str, capacity_bytes: int) -> str:
    """A qcow2 volume for a storage pool (``--libvirt-pool``)."""
    volume = ET.Element("volume")
    ET.SubElement(volume, "name").text = name
    ET.SubElement(volume, "capacity", unit="bytes").text = str(capacity_bytes)
    target = ET.SubElement(volume, "target")
    ET.SubElement(target, "format", type="qcow2")
    return ET.tostring(volume, encoding="unicode")
