"""Proof on a real libvirtd: Debian guests as libvirt domains, adopted and named through REST.

The engine (real PostgreSQL) and two hosts run as processes: ``host --hypervisor
libvirt`` following the system libvirtd, and, for the comparison figures,
``host --hypervisor qemu`` as tests/test_vm_e2e.py drives it. Three guests of
the same cached image (tests/vm/image.py) boot at once, one boot each for the
whole module: domain ``agent`` (the diskname agent's channel and qemu-ga's),
domain ``qga`` (qemu-ga's channel only: every name comes through libvirt's
guest info) and a plain QEMU guest for the QEMU backend (the three boot in
parallel, so each boot figure is that of three guests sharing the machine).

The last test proves the guest's whole view (SPEC §17, tests/vm/view.py) on
domain ``agent`` and reboots it.

Neither domain is registered with the engine: the host reports them and the
engine adopts them. Figures (boots, request-to-name per bus, both backends)
are printed and written to ``$DISKNAME_LIBVIRT_REPORT`` when set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from diskname.bench.procs import Child
from diskname.bench.run import free_port
from diskname.streams import JsonRpcClient

from .conftest import wait_until
from .rest import Rest
from .vm import lab as lab_parts
from .vm import libvirt as lv
from .vm.guest import GuestSpec, booted
from .vm.image import agent_share, ensure_image
from .vm.view import prove_guest_view

pytestmark = [
    pytest.mark.vm,
    pytest.mark.libvirt,
    pytest.mark.timeout(900),
    pytest.mark.asyncio(loop_scope="module"),
]

BOOT_TIMEOUT = 300.0
NAME_TIMEOUT = 20.0
HOTPLUGS = 10  # per bus and backend
BUSES = ("virtio", "virtio_scsi")


SKIP = lab_parts.skip_reason()
if SKIP:
    pytestmark.append(pytest.mark.skip(reason=SKIP))

FIGURES: dict[str, Any] = {}


@dataclass
class Lab:
    rest: Rest
    tmp: Path
    libvirt_host: str  # engine host ids
    qemu_host: str
    libvirt_rpc: int
    qemu_rpc: int
    agent: lv.DomainSpec
    qga: lv.DomainSpec
    qemu_vm: str = ""
    children: list[Child] = field(default_factory=list)

    @property
    def images(self) -> Path:
        return self.tmp / "libvirt-host" / "images"

    def logs(self) -> str:
        return "\n".join(f"--- {c.name}\n{c.tail()}" for c in self.children)

    async def mapping(self, vm: str, port: int = 0) -> dict[str, Any]:
        """The host's guest mapping of ``vm`` (the libvirt host's, unless ``port``)."""
        async with await JsonRpcClient.connect("127.0.0.1", port or self.libvirt_rpc) as rpc:
            (full,) = await rpc.call("Host.getVMFullList", {"vmList": [vm]})
        return dict(full["guestDiskMapping"])

    async def agent_named(self, vm: str, name: str, port: int = 0) -> bool:
        """The diskname agent itself (not qemu-ga) reported ``name``."""
        entries = (await self.mapping(vm, port)).values()
        return any(e["name"] == name and e.get("source") != "qemu-ga" for e in entries)


async def _processes(tmp: Path, dsn: str) -> tuple[list[Child], int, int, int]:
    http, libvirt_rpc, qemu_rpc = free_port(), free_port(), free_port()
    engine = await Child.start(
        "engine", tmp / "engine.log", "-m", "diskname", "engine", "--dsn", dsn,
        "--http", f"127.0.0.1:{http}", "--state-dir", str(tmp / "engine"),
    )  # fmt: skip
    libvirt_host = await Child.start(
        "libvirt-host", tmp / "libvirt-host.log", "-m", "diskname", "host",
        "--hypervisor", "libvirt", "--libvirt-uri", lv.URI, "--listen", f"127.0.0.1:{libvirt_rpc}",
        "--state-dir", str(tmp / "libvirt-host"), "--channels-dir", str(tmp / "lch"),
        "--host-id", str(uuid.uuid4()),
    )  # fmt: skip
    qemu_host = await Child.start(
        "qemu-host", tmp / "qemu-host.log", "-m", "diskname", "host", "--hypervisor", "qemu",
        "--channel-mode", "connect", "--listen", f"127.0.0.1:{qemu_rpc}",
        "--channels-dir", str(tmp / "qch"), "--state-dir", str(tmp / "qemu-host"),
        "--host-id", str(uuid.uuid4()),
    )  # fmt: skip
    return [engine, libvirt_host, qemu_host], http, libvirt_rpc, qemu_rpc


async def _create_vm(rest: Rest, host: str) -> str:
    """A VM on the QEMU host, once the engine is connected to it (409 until then)."""
    body = {"name": "qemu-guest", "host": {"id": host}}

    async def created() -> str | None:
        status, data = await rest.call("POST", "/api/vms", body)
        assert status in (201, 409), (status, data)
        return str(data["id"]) if status == 201 else None

    return str(await wait_until(created, timeout=30, interval=0.2))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab(pg_cluster: str) -> AsyncIterator[Lab]:
    image, built = ensure_image()
    FIGURES["image_build_s"] = round(built, 1) if built else "cached"
    tmp = Path(tempfile.mkdtemp(prefix="dnlv"))
    async with contextlib.AsyncExitStack() as stack:
        dsn = await stack.enter_async_context(lab_parts.database(pg_cluster))
        children, http, libvirt_rpc, qemu_rpc = await _processes(tmp, dsn)
        stack.push_async_callback(lab_parts.stop_all, children)
        session = await stack.enter_async_context(
            aiohttp.ClientSession(base_url=f"http://127.0.0.1:{http}")
        )
        rest = Rest(session)
        lab = Lab(
            rest, tmp, "", "", libvirt_rpc, qemu_rpc,
            lab_parts.domain_spec(tmp, "agent", agent=True),
            lab_parts.domain_spec(tmp, "qga", agent=False), children=children,
        )  # fmt: skip
        try:
            await wait_until(lambda: lab_parts.healthy(rest), timeout=60, interval=0.1)
            lab.libvirt_host = await lab_parts.register(rest, "libvirt-host", libvirt_rpc)
            lab.qemu_host = await lab_parts.register(rest, "qemu-host", qemu_rpc)
            lab.qemu_vm = await _create_vm(rest, lab.qemu_host)
            (root,) = (await rest.ok("GET", f"/api/vms/{lab.qemu_vm}/diskattachments"))[
                "disk_attachment"
            ]
            # Both sources in both backends' guests, so the figures compare backends.
            work = _workdir(tmp, "qemu")
            qemu_spec = GuestSpec(
                lab.qemu_vm, root["id"][:20], tmp / "qch", work, agent_share(work / "share"),
                qemu_ga=True,
            )  # fmt: skip
            started = asyncio.get_running_loop().time()
            await stack.enter_async_context(lv.running_domain(image, lab.agent))
            await stack.enter_async_context(lv.running_domain(image, lab.qga))
            await stack.enter_async_context(booted(image, qemu_spec))
            FIGURES["boot_started_at"] = started
            yield lab
        except BaseException:
            print(lab.logs())
            for spec in (lab.agent, lab.qga):
                print(f"--- console {spec.name}\n{lv.console_tail(spec)}")
            raise
        finally:
            _report()
    shutil.rmtree(tmp, ignore_errors=True)


def _workdir(tmp: Path, name: str) -> Path:
    path = tmp / name
    path.mkdir()
    return path


def _report() -> None:
    FIGURES.pop("boot_started_at", None)
    text = json.dumps(FIGURES, indent=2, sort_keys=True)
    print(f"\nlibvirt figures:\n{text}")
    out = os.environ.get("DISKNAME_LIBVIRT_REPORT")
    if out:
        Path(out).write_text(text + "\n")


async def timed_plug(rest: Rest, vm: str, iface: str) -> tuple[str, str, float]:
    """A new disk through REST: its id, the guest's name for it, request-to-name seconds."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    disk = await rest.hotplug(vm, iface)
    name, _ = await rest.wait_name(vm, disk, timeout=NAME_TIMEOUT)
    return disk, name, loop.time() - start


async def plug_rounds(rest: Rest, vm: str) -> dict[str, Any]:
    """``HOTPLUGS`` plug-to-name rounds per bus (each disk deleted after), as figures."""
    out: dict[str, Any] = {}
    for iface in BUSES:
        took = []
        for _ in range(HOTPLUGS):
            disk, _, seconds = await timed_plug(rest, vm, iface)
            took.append(seconds)
            await rest.ok("DELETE", f"/api/vms/{vm}/diskattachments/{disk}", status=204)
        out[iface] = {
            "median_s": round(statistics.median(took), 3),
            "worst_s": round(max(took), 3),
            "all_s": [round(t, 3) for t in took],
        }
    return out


# -- the tests, in the order they run on the shared guests ------------------------


async def test_domains_appear_in_rest_without_registering_them(lab: Lab) -> None:
    async def listed() -> dict[str, Any] | None:
        vms = {vm["id"]: vm for vm in (await lab.rest.ok("GET", "/api/vms"))["vm"]}
        return vms if {lab.agent.uuid, lab.qga.uuid} <= set(vms) else None

    vms = await wait_until(listed, timeout=30, interval=0.1)
    for spec in (lab.agent, lab.qga):
        assert vms[spec.uuid]["name"] == spec.name
        assert vms[spec.uuid]["host"]["id"] == lab.libvirt_host
    started, loop = FIGURES["boot_started_at"], asyncio.get_running_loop()

    async def booted_and_named(vm: str, label: str, agent_on: int | None) -> str:
        name = await lab_parts.root_named(lab.rest, vm, BOOT_TIMEOUT)
        FIGURES[f"boot_to_root_name_s[{label}]"] = round(loop.time() - started, 1)
        if agent_on is not None:  # and the diskname agent is up (qemu-ga may name it first)
            await wait_until(lambda: lab.agent_named(vm, "/dev/vda", agent_on), BOOT_TIMEOUT, 0.2)
            FIGURES[f"boot_to_agent_s[{label}]"] = round(loop.time() - started, 1)
        return name

    names = await asyncio.gather(
        booted_and_named(lab.agent.uuid, "libvirt", lab.libvirt_rpc),
        booted_and_named(lab.qga.uuid, "libvirt, qemu-ga only", None),
        booted_and_named(lab.qemu_vm, "qemu", lab.qemu_rpc),
    )
    assert names == ["/dev/vda"] * 3


async def test_rest_hot_plugs_through_libvirt_are_named_by_the_guest_agent(lab: Lab) -> None:
    rest, vm = lab.rest, lab.agent.uuid
    disk, name, took = await timed_plug(rest, vm, "virtio")
    assert re.fullmatch(r"/dev/vd[b-z]", name), name
    assert (lab.images / f"{disk}.qcow2").exists()
    scsi, sname, stook = await timed_plug(rest, vm, "virtio_scsi")
    assert re.fullmatch(r"/dev/sd[a-z]+", sname), sname
    FIGURES["libvirt_first_plug_s"] = {"virtio": round(took, 3), "virtio_scsi": round(stook, 3)}
    for named in (name, sname):  # the diskname agent's own report, not only qemu-ga's
        await wait_until(lambda n=named: lab.agent_named(vm, n), timeout=NAME_TIMEOUT)
    # Unplug clears the name; a re-plug of the same disk gets it back.
    await rest.ok("PUT", f"/api/vms/{vm}/diskattachments/{disk}", {"active": False})
    await rest.wait_unnamed(vm, disk, timeout=NAME_TIMEOUT)
    await rest.ok("PUT", f"/api/vms/{vm}/diskattachments/{disk}", {"active": True})
    assert (await rest.wait_name(vm, disk, timeout=NAME_TIMEOUT))[0] == name
    # Detached for good: the disk's image goes with it.
    for gone in (disk, scsi):
        await rest.ok("DELETE", f"/api/vms/{vm}/diskattachments/{gone}", status=204)
        await wait_until(lambda d=gone: not (lab.images / f"{d}.qcow2").exists(), timeout=10)


async def test_qemu_ga_through_libvirt_names_hot_plugs_without_the_agent(lab: Lab) -> None:
    rest, vm = lab.rest, lab.qga.uuid
    disk, name, took = await timed_plug(rest, vm, "virtio")
    assert re.fullmatch(r"/dev/vd[b-z]", name), name
    _, sname, stook = await timed_plug(rest, vm, "virtio_scsi")
    assert re.fullmatch(r"/dev/sd[a-z]+", sname), sname
    mapping = await lab.mapping(vm)
    assert {e["name"]: e.get("source") for e in mapping.values()}[name] == "qemu-ga"
    FIGURES["libvirt_qemu_ga_plug_s"] = {"virtio": round(took, 3), "virtio_scsi": round(stook, 3)}
    await rest.ok("PUT", f"/api/vms/{vm}/diskattachments/{disk}", {"active": False})
    await rest.wait_unnamed(vm, disk, timeout=NAME_TIMEOUT)


async def test_a_virsh_attach_disk_with_a_serial_shows_up_named(lab: Lab) -> None:
    rest, vm, serial = lab.rest, lab.agent.uuid, "virsh-" + uuid.uuid4().hex[:12]
    before = {a["id"] for a in await lab_parts.attachments(rest, vm)}
    image = lab.agent.workdir / "virsh-disk.qcow2"
    proc = await asyncio.create_subprocess_exec("qemu-img", "create", "-q", "-f", "qcow2",
                                                str(image), "64M")  # fmt: skip
    assert await proc.wait() == 0
    attach = await asyncio.to_thread(
        lv.virsh, "attach-disk", vm, str(image), "vdt", "--targetbus", "virtio", "--live",
        "--subdriver", "qcow2", "--serial", serial,
    )  # fmt: skip
    assert attach.returncode == 0, attach.stderr

    async def new_and_named() -> dict[str, Any] | None:
        found = [a for a in await lab_parts.attachments(rest, vm) if a["id"] not in before]
        return found[0] if found and found[0].get("logical_name") else None

    attachment = await wait_until(new_and_named, timeout=NAME_TIMEOUT, interval=0.05)
    assert re.fullmatch(r"/dev/vd[b-z]", attachment["logical_name"]), attachment
    assert attachment["active"] is True

    async def by_serial() -> bool:  # the guest names it by the serial virsh gave
        mapping = await lab.mapping(vm)
        return any(serial in k and e["name"] == attachment["logical_name"]
                   for k, e in mapping.items())  # fmt: skip

    await wait_until(by_serial, timeout=NAME_TIMEOUT, interval=0.05)
    detach = await asyncio.to_thread(lv.virsh, "detach-disk", vm, "vdt", "--live")
    assert detach.returncode == 0, detach.stderr
    await rest.wait_unnamed(vm, attachment["id"], timeout=NAME_TIMEOUT)
    assert image.exists()  # not the host's image: never removed by it


async def test_a_defined_domain_is_a_vm_down_and_undefining_it_clears_its_disks(
    lab: Lab,
) -> None:
    spec = lab_parts.domain_spec(lab.tmp, "defined", agent=True)  # never started: no boot, no CPU
    xml = spec.workdir / "domain.xml"
    xml.write_text(lv.domain_xml(ensure_image()[0], spec))
    defined = await asyncio.to_thread(lv.virsh, "define", str(xml))
    assert defined.returncode == 0, defined.stderr
    try:

        async def adopted() -> list[dict[str, Any]] | None:
            status, vm = await lab.rest.call("GET", f"/api/vms/{spec.uuid}")
            found = await lab_parts.attachments(lab.rest, spec.uuid) if status == 200 else []
            return found if found and vm["status"] == "Down" else None

        (root,) = await wait_until(adopted, timeout=NAME_TIMEOUT, interval=0.05)
        assert root["active"] is True and root["logical_name"] is None
    finally:
        undefined = await asyncio.to_thread(lv.virsh, "undefine", spec.uuid)
    assert undefined.returncode == 0, undefined.stderr

    async def cleared() -> bool:
        return not any(a["active"] for a in await lab_parts.attachments(lab.rest, spec.uuid))

    await wait_until(cleared, timeout=NAME_TIMEOUT, interval=0.05)


async def test_sata_is_refused_with_libvirts_message(lab: Lab) -> None:
    body = {"interface": "sata", "active": True}
    path = f"/api/vms/{lab.agent.uuid}/diskattachments"
    images = set(lab.images.glob("*.qcow2"))
    status, data = await lab.rest.call("POST", path, body)
    assert status == 502, (status, data)
    assert "does not support hotplugging" in data["error"]["message"], data
    assert set(lab.images.glob("*.qcow2")) == images  # the refused disk's image is gone too


async def test_request_to_name_per_bus_libvirt_against_qemu(lab: Lab) -> None:
    libvirt = await plug_rounds(lab.rest, lab.agent.uuid)
    qemu = await plug_rounds(lab.rest, lab.qemu_vm)
    FIGURES["request_to_name[libvirt]"] = libvirt
    FIGURES["request_to_name[qemu]"] = qemu
    for figures in (libvirt, qemu):
        for iface in BUSES:
            assert figures[iface]["worst_s"] < NAME_TIMEOUT


async def test_with_a_storage_pool_images_are_its_volumes(lab: Lab) -> None:
    """A second host (not registered: JSON-RPC only) given ``--libvirt-pool``."""
    folder, name = lab.tmp / "pool", f"dnpool-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    made = await asyncio.to_thread(lv.virsh, "pool-create-as", name, "dir", "--target", str(folder))
    assert made.returncode == 0, made.stderr
    port, disk = free_port(), str(uuid.uuid4())
    host = await Child.start(
        "pool-host", lab.tmp / "pool-host.log", "-m", "diskname", "host",
        "--hypervisor", "libvirt", "--libvirt-pool", name, "--listen", f"127.0.0.1:{port}",
        "--state-dir", str(lab.tmp / "pool-host"), "--channels-dir", str(lab.tmp / "pch"),
    )  # fmt: skip
    try:
        rpc = await wait_until(lambda: lab_parts.rpc(port), timeout=30, interval=0.1)
        async with rpc:
            await wait_until(lambda: _lists(rpc, lab.qga.uuid), timeout=30, interval=0.1)
            drive = {"diskId": disk, "iface": "virtio"}
            plugged = await rpc.call("VM.hotplugDisk", {"vmId": lab.qga.uuid, "drive": drive})
            assert plugged["diskId"] == disk and plugged["address"]
            volume = folder / f"diskname-{disk}.qcow2"
            assert volume.exists()
            params = {"vmId": lab.qga.uuid, "diskId": disk, "discard": True}
            assert await rpc.call("VM.hotunplugDisk", params, timeout=30) is True
            assert not volume.exists()
    finally:
        print(host.tail())
        assert await host.stop() == 0
        await asyncio.to_thread(lv.virsh, "pool-destroy", name, check=False)


async def _lists(rpc: JsonRpcClient, vm: str) -> bool:
    return vm in {s["vmId"] for s in await rpc.call("Host.getAllVmStats")}


async def test_the_whole_guest_view_through_libvirt_and_across_a_reboot(lab: Lab) -> None:
    """SPEC §17 on the agent domain (tests/vm/view.py); last, since it reboots that guest.

    Commands run in the guest through libvirt's own qemu-ga channel
    (``virsh qemu-agent-command``).
    """
    vm = lab.agent.uuid

    async def connect() -> lv.VirshExec:
        return lv.VirshExec(vm)

    figures, _ = await prove_guest_view(lab.rest, vm, lv.VirshExec(vm), connect)
    FIGURES["guest_view[libvirt]"] = figures
    print(f"guest view figures (libvirt): {json.dumps(figures)}")
    assert figures["reordered"], figures  # X, deleted before the reboot, was named first
