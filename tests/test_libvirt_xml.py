"""libvirt domain XML both ways, without libvirt: a real live XML in, values out.

``tests/data/libvirt-live-domain.xml`` is ``virsh dumpxml`` of the test domain
(tests/vm/libvirt.py) under libvirt 9.0 with paths shortened, plus the disks
libvirt showed after a diskname hot-plug (``ua-`` alias), a ``virsh
attach-disk --serial`` and a SCSI hot-plug, and an empty SATA cdrom.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from diskname.host.hypervisors.libvirt_xml import (
    AgentChannel,
    BadDomainXml,
    FileImage,
    PoolVolume,
    disk_xml,
    free_target,
    parse_domain,
    volume_xml,
)

LIVE = (Path(__file__).parent / "data" / "libvirt-live-domain.xml").read_text()
UUID = "f20348af-d2e6-4c20-964d-d7e9c95b4c41"


def _domain_with(*disks: str) -> str:
    body = "".join(disks)
    return f"<domain><name>d</name><uuid>{UUID}</uuid><devices>{body}</devices></domain>"


def test_a_live_domain_gives_its_name_uuid_disks_and_channels() -> None:
    domain = parse_domain(LIVE)
    assert (domain.uuid, domain.name) == (UUID, "dnx1")
    assert [d.target for d in domain.disks] == ["sda", "vda", "vdb", "vdc"]  # no cdrom
    assert domain.targets == {"vda", "vdb", "vdc", "sda", "sdb"}  # the cdrom's name is taken
    path = Path(f"/var/lib/dn/{UUID}.ovirt-guest-agent.0")
    assert domain.agent == AgentChannel(path, "connect")  # QEMU binds it, the host connects
    assert domain.qemu_ga


def test_each_disk_has_serial_bus_alias_address_and_source() -> None:
    disks = {d.target: d for d in parse_domain(LIVE).disks}
    root = disks["vda"]
    assert (root.serial, root.bus, root.iface, root.alias) == (
        "rootserial0123456789", "virtio", "virtio", "virtio-disk0",
    )  # fmt: skip
    assert root.address == "0000:04:00.0"
    assert root.source == "file:/var/lib/dn/root.qcow2"
    assert root.user_disk_id is None
    scsi = disks["sda"]
    assert (scsi.iface, scsi.address) == ("virtio_scsi", "0:0:0:0")
    assert scsi.user_disk_id == "2a2b3c4d-5e6f-4a8b-9c0d-111111111111"
    assert disks["vdb"].user_disk_id == "1a2b3c4d-5e6f-4a8b-9c0d-111111111111"
    assert (disks["vdc"].serial, disks["vdc"].alias) == ("virshserial42", "virtio-disk2")
    # What a detach sends back is the element itself.
    assert parse_domain(_domain_with(disks["vdc"].xml)).disks[0].serial == "virshserial42"


def test_buses_map_to_the_four_interfaces_and_others_are_left_out() -> None:
    xml = _domain_with(
        "<disk type='file' device='disk'><target dev='sda' bus='scsi'/>"
        "<address type='drive' controller='1' bus='0' target='0' unit='2'/></disk>",
        "<disk type='file' device='disk'><target dev='hda' bus='ide'/></disk>",
        "<disk type='file' device='disk'><target dev='sdz' bus='usb'/></disk>",
    )
    ide, scsi = parse_domain(xml).disks  # hda sorts before sda
    assert (scsi.iface, scsi.address, scsi.serial, scsi.source) == (
        "virtio_scsi", "1:0:0:2", None, "",
    )  # fmt: skip
    assert (ide.target, ide.iface) == ("hda", "sata")


def test_an_alias_that_only_looks_like_a_disk_id_is_not_one() -> None:
    for alias in ("ua-mine", "ua-1A2B3C4D-5E6F-4A8B-9C0D-111111111111", "ua-"):
        xml = _domain_with(
            f"<disk type='file'><target dev='vdb' bus='virtio'/><alias name='{alias}'/></disk>"
        )
        assert parse_domain(xml).disks[0].user_disk_id is None


def test_channels_the_host_cannot_use_are_ignored() -> None:
    no_path = "<channel type='unix'><target type='virtio' name='ovirt-guest-agent.0'/></channel>"
    assert parse_domain(_domain_with(no_path)).agent is None  # inactive XML: no path yet
    served = (
        "<channel type='unix'><source mode='connect' path='/run/a.sock'/>"
        "<target type='virtio' name='com.redhat.rhevm.vdsm'/></channel>"
    )
    assert parse_domain(_domain_with(served)).agent == AgentChannel(Path("/run/a.sock"), "listen")
    assert not parse_domain(_domain_with(served)).qemu_ga


@pytest.mark.parametrize(
    "text",
    [
        "",
        "<domain/>",
        "<vm><uuid>x</uuid></vm>",
        "<domain><name>x</name></domain>",
        "<domain><name>x</name><uuid>not-a-uuid</uuid></domain>",
        "<a",
    ],
)
def test_what_is_no_domain_is_refused(text: str) -> None:
    with pytest.raises(BadDomainXml):
        parse_domain(text)


@given(st.text(max_size=300))
def test_any_text_is_a_domain_or_bad_domain_xml(text: str) -> None:
    with contextlib.suppress(BadDomainXml):
        parse_domain(text)


def test_a_hot_plug_disk_carries_serial_alias_and_image() -> None:
    serial = "se<r>&'\"ial"
    alias = "ua-1a2b3c4d-5e6f-4a8b-9c0d-111111111111"
    image = FileImage(Path("/var/lib/diskname/host/images/x.qcow2"))
    xml = disk_xml(target="vdd", bus="virtio", serial=serial, alias=alias, image=image)
    (disk,) = parse_domain(_domain_with(xml)).disks
    assert (disk.target, disk.bus, disk.serial, disk.alias) == ("vdd", "virtio", serial, alias)
    assert disk.source == f"file:{image.path}"
    assert disk.user_disk_id == "1a2b3c4d-5e6f-4a8b-9c0d-111111111111"
    pooled = disk_xml(
        target="sdc", bus="scsi", serial="s", alias=alias, image=PoolVolume("default", "v.qcow2")
    )
    assert parse_domain(_domain_with(pooled)).disks[0].source == "volume:default/v.qcow2"


def test_a_volume_is_qcow2_of_the_size_asked() -> None:
    xml = volume_xml("diskname-x.qcow2", 1 << 30)
    assert "<name>diskname-x.qcow2</name>" in xml
    assert '<capacity unit="bytes">1073741824</capacity>' in xml
    assert '<format type="qcow2" />' in xml


def test_free_targets_follow_the_kernels_order_per_bus() -> None:
    taken = parse_domain(LIVE).targets
    assert free_target("virtio", taken) == "vdd"
    assert free_target("scsi", taken) == "sdc"  # sda (scsi) and sdb (the sata cdrom) are taken
    assert free_target("sata", taken) == "sdc"
    every = {f"vd{c}" for c in "abcdefghijklmnopqrstuvwxyz"}
    assert free_target("virtio", every) == "vdaa"
    assert free_target("nvme", {"nvme0n1"}) == "nvme0n2"
