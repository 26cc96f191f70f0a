"""Floating disks in a real libvirt storage pool, named by a real guest (SPEC §18, acceptance 3).

The engine (HTTPS, one user for Ansible, anonymous admin on loopback for the
test's own REST calls) and ``host --hypervisor libvirt`` run as processes beside
the system libvirtd; one Debian guest (tests/vm/image.py) boots as a transient
domain with the diskname agent and libvirt's qemu-ga channel. A transient dir
pool (``virsh pool-create-as``) is the storage domain: the host lists every
active pool, makes a floating disk's image as the volume
``diskname-<diskId>.qcow2`` there, plugs that volume and deletes it with the disk.
The host is also given that pool as ``--libvirt-pool`` (where its own images of
new disks go, named alike, removed when such a disk is detached for good): a
floating disk's volume must outlive its detach all the same.

Black-box through REST and the guest: the volume in the pool (its file, ``virsh
vol-list``, its capacity), the guest's size and serial of the named device
(``guest-exec`` through ``virsh qemu-agent-command``), then the same with oVirt's
Ansible collection running docs/examples/attach-disk.yml and remove-disk.yml and
the guest formatting and mounting the disk by the name diskname reported
(docs/examples/format-disk.sh). Figures are printed (and written to
``$DISKNAME_LIBVIRT_POOL_REPORT`` when set).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import ssl
import sys
import tempfile
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from diskname.bench.procs import Child
from diskname.bench.run import free_port

from .ansible_run import ANSIBLE, ATTACH, DOCS_EXAMPLES, REMOVE, play
from .conftest import wait_until
from .rest import Rest
from .vm import lab as lab_parts
from .vm import libvirt as lv
from .vm.image import ensure_image

pytestmark = [
    pytest.mark.vm,
    pytest.mark.libvirt,
    pytest.mark.timeout(900),
    pytest.mark.asyncio(loop_scope="module"),
]
SKIP = lab_parts.skip_reason()
if SKIP:
    pytestmark.append(pytest.mark.skip(reason=SKIP))

BOOT_TIMEOUT = 300.0
NAME_TIMEOUT = 30.0
GIB = 1 << 30
USER, PASSWORD = "admin@internal", "pool-test-password"
FORMAT_SCRIPT = DOCS_EXAMPLES / "format-disk.sh"
FIGURES: dict[str, Any] = {}


@dataclass
class PoolLab:
    rest: Rest
    base: str  # https://127.0.0.1:PORT
    ca_file: Path
    tmp: Path
    guest: lv.DomainSpec
    pool: str
    pool_dir: Path
    host: str = ""  # the libvirt host's engine id
    children: list[Child] = field(default_factory=list)

    def volume(self, disk_id: str) -> Path:
        return self.pool_dir / f"diskname-{disk_id}.qcow2"

    def logs(self) -> str:
        return "\n".join(f"--- {c.name}\n{c.tail()}" for c in self.children)


async def _cli(*args: str, stdin: str = "") -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "diskname", *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate(stdin.encode())
    assert proc.returncode == 0, (args, out.decode())


async def _processes(tmp: Path, dsn: str, pki: Path, pool: str) -> tuple[list[Child], int, int]:
    http, rpc = free_port(), free_port()
    engine = await Child.start(
        "engine", tmp / "engine.log", "-m", "diskname", "engine", "--dsn", dsn,
        "--http", f"127.0.0.1:{http}", "--state-dir", str(tmp / "engine"),
        "--https-cert", str(pki / "engine.pem"), "--https-key", str(pki / "engine.key"),
        "--anonymous-admin",
    )  # fmt: skip
    host = await Child.start(
        "libvirt-host", tmp / "libvirt-host.log", "-m", "diskname", "host",
        "--hypervisor", "libvirt", "--libvirt-uri", lv.URI, "--listen", f"127.0.0.1:{rpc}",
        "--state-dir", str(tmp / "libvirt-host"), "--channels-dir", str(tmp / "lch"),
        "--host-id", str(uuid.uuid4()), "--libvirt-pool", pool,
    )  # fmt: skip
    return [engine, host], http, rpc


@contextlib.asynccontextmanager
async def _pool(folder: Path) -> AsyncIterator[str]:
    """A transient dir pool on ``folder`` for the block (destroyed after: nothing stays)."""
    name = f"dnpool-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(folder.mkdir)
    made = await asyncio.to_thread(lv.virsh, "pool-create-as", name, "dir", "--target", str(folder))
    assert made.returncode == 0, made.stderr
    try:
        yield name
    finally:
        await asyncio.to_thread(lv.virsh, "pool-destroy", name, check=False)


async def _guest_answers(shell: lv.VirshExec) -> bool:
    try:
        await shell.call("guest-ping", {})
    except AssertionError:  # libvirt: the guest agent is not connected yet
        return False
    return True


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab(pg_cluster: str) -> AsyncIterator[PoolLab]:
    image, _ = ensure_image()
    tmp = Path(tempfile.mkdtemp(prefix="dnpv"))  # short: channels are UNIX sockets
    pki = tmp / "pki"
    async with contextlib.AsyncExitStack() as stack:
        dsn = await stack.enter_async_context(lab_parts.database(pg_cluster))
        await _cli("pki", "init", "--dir", str(pki), "--name", "localhost",
                   "--address", "127.0.0.1")  # fmt: skip
        await _cli("user", "add", USER, "--role", "admin", "--password-stdin", "--dsn", dsn,
                   stdin=PASSWORD + "\n")  # fmt: skip
        pool = await stack.enter_async_context(_pool(tmp / "volumes"))
        children, http, rpc = await _processes(tmp, dsn, pki, pool)
        stack.push_async_callback(lab_parts.stop_all, children)
        tls = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        base = f"https://127.0.0.1:{http}"
        session = await stack.enter_async_context(
            aiohttp.ClientSession(base_url=base, connector=aiohttp.TCPConnector(ssl=tls))
        )
        spec = lab_parts.domain_spec(tmp, "pool", agent=True)
        lab = PoolLab(Rest(session), base, pki / "ca.pem", tmp, spec, pool, tmp / "volumes")
        lab.children = children
        try:
            await wait_until(lambda: lab_parts.healthy(lab.rest), timeout=60, interval=0.1)
            lab.host = await lab_parts.register(lab.rest, "libvirt-host", rpc)
            loop = asyncio.get_running_loop()
            started = loop.time()
            await stack.enter_async_context(lv.running_domain(image, spec))
            await lab_parts.root_named(lab.rest, spec.uuid, BOOT_TIMEOUT)
            shell = lv.VirshExec(spec.uuid)
            await wait_until(lambda: _guest_answers(shell), timeout=BOOT_TIMEOUT, interval=1.0)
            FIGURES["boot_to_root_name_and_qemu_ga_s"] = round(loop.time() - started, 1)
            yield lab
        except BaseException:
            print(f"{lab.logs()}\n--- console\n{lv.console_tail(spec)}")
            raise
        finally:
            _report()
    shutil.rmtree(tmp, ignore_errors=True)


def _report() -> None:
    text = json.dumps(FIGURES, indent=2, sort_keys=True)
    print(f"\nlibvirt pool figures:\n{text}")
    out = os.environ.get("DISKNAME_LIBVIRT_POOL_REPORT")
    if out:
        Path(out).write_text(text + "\n")


async def _domain(lab: PoolLab) -> dict[str, Any] | None:
    """The pool as the libvirt host's storage domain, once the engine lists it."""
    listed = (await lab.rest.ok("GET", "/api/storagedomains"))["storage_domain"]
    return next((d for d in listed if d["name"] == lab.pool), None)


async def _ovirt_status(lab: PoolLab, disk_id: str) -> str:
    """The disk's ``status`` as oVirt's API serves it (the JSON API lists disks by serial)."""
    async with lab.rest.http.get(f"/ovirt-engine/api/disks/{disk_id}") as resp:
        assert resp.status == 200, await resp.text()
        return ET.fromstring(await resp.text()).findtext("status") or ""


async def _volumes(lab: PoolLab) -> dict[str, int]:
    """The pool's volumes as libvirt lists them: name → capacity in bytes."""
    listed = await asyncio.to_thread(lv.virsh, "vol-list", lab.pool)
    out = {}
    for line in listed.stdout.splitlines():
        name = line.split()[0]
        xml = await asyncio.to_thread(lv.virsh, "vol-dumpxml", "--pool", lab.pool, name)
        out[name] = int(ET.fromstring(xml.stdout).findtext("capacity") or -1)
    return out


async def _in_guest(lab: PoolLab, *args: str) -> str:
    code, out, err = await lv.VirshExec(lab.guest.uuid).run(*args)
    assert code == 0, (args, code, out, err)
    return out.strip()


# -- the tests, in the order they run on the one guest ----------------------------


async def test_the_pool_is_a_storage_domain_of_the_libvirt_host(lab: PoolLab) -> None:
    domain = await wait_until(lambda: _domain(lab), timeout=30, interval=0.2)
    assert domain["host"]["id"] == lab.host and domain["kind"] == "pool", domain
    assert domain["available"] > GIB and domain["used"] >= 0, domain


async def test_a_floating_disk_in_the_pool_is_named_in_the_guest_and_goes_with_its_volume(
    lab: PoolLab,
) -> None:
    rest, vm, loop = lab.rest, lab.guest.uuid, asyncio.get_running_loop()
    domain = await wait_until(lambda: _domain(lab), timeout=30, interval=0.2)
    body = {"name": "pooled", "provisioned_size": GIB, "storage_domains": [{"id": domain["id"]}]}
    started = loop.time()
    disk = await rest.ok("POST", "/api/disks", body, status=201)
    assert disk["status"] in ("locked", "ok") and disk["storage_domains"][0]["name"] == lab.pool
    disk_id = disk["id"]
    await wait_until(lambda: _ok(lab, disk_id), timeout=60, interval=0.05)
    FIGURES["create_to_ok_s"] = round(loop.time() - started, 3)
    volume = lab.volume(disk_id)
    assert volume.exists(), sorted(p.name for p in lab.pool_dir.iterdir())
    assert (await _volumes(lab)).get(volume.name) == GIB  # the provisioned size is the volume's

    started = loop.time()
    attach = {"interface": "virtio", "disk": {"id": disk_id}}
    att = await rest.ok("POST", f"/api/vms/{vm}/diskattachments", attach, status=201)
    assert att["disk"]["provisioned_size"] == GIB, att
    name, _ = await rest.wait_name(vm, disk_id, timeout=NAME_TIMEOUT)
    FIGURES["attach_to_named_s"] = round(loop.time() - started, 3)
    assert re.fullmatch(r"/dev/vd[b-z]", name), name
    live = await asyncio.to_thread(lv.virsh, "dumpxml", vm)  # the device is the pool's volume
    assert f"pool='{lab.pool}' volume='{volume.name}'" in live.stdout.replace('"', "'"), live.stdout
    dev = name.removeprefix("/dev/")
    size = int(await _in_guest(lab, "/sbin/blockdev", "--getsize64", name))
    FIGURES["guest_seen_size_bytes"] = size
    assert size == GIB
    assert await _in_guest(lab, "/bin/cat", f"/sys/block/{dev}/serial") == att["disk"]["serial"]

    status, error = await rest.call("DELETE", f"/api/disks/{disk_id}")
    assert status == 409 and "detach it first" in error["error"]["message"], (status, error)
    await rest.ok("DELETE", f"/api/vms/{vm}/diskattachments/{disk_id}", status=204)
    # Detached, the disk floats again: its volume stays, though the host's own images
    # (--libvirt-pool) are volumes of the same pool, which a detach for good removes.
    assert volume.exists() and volume.name in await _volumes(lab)
    await rest.ok("DELETE", f"/api/disks/{disk_id}", status=204)
    assert not volume.exists() and volume.name not in await _volumes(lab)

    # A disk made by its attach (no domain named) is the host's own image, a volume of
    # the same pool (--libvirt-pool): detached for good, it goes at once.
    own = await rest.hotplug(vm, "virtio")
    await rest.wait_name(vm, own, timeout=NAME_TIMEOUT)
    assert lab.volume(own).exists()
    await rest.ok("DELETE", f"/api/vms/{vm}/diskattachments/{own}", status=204)
    await wait_until(lambda: not lab.volume(own).exists(), timeout=10)


async def _ok(lab: PoolLab, disk_id: str) -> bool:
    return await _ovirt_status(lab, disk_id) == "ok"


@pytest.mark.skipif(not ANSIBLE.exists(), reason="ansible is not installed (test extra)")
async def test_ansible_attaches_a_pool_disk_the_guest_formats_by_its_name(
    lab: PoolLab, tmp_path: Path
) -> None:
    """docs/automating.md end to end: the playbooks, and the format script in the guest."""
    vm = lab.guest.uuid
    extra = {"url": f"{lab.base}/ovirt-engine/api", "password": PASSWORD,
             "ca_file": str(lab.ca_file), "vm": lab.guest.name, "domain": lab.pool}  # fmt: skip
    tasks = await asyncio.to_thread(play, ATTACH, extra, tmp_path)
    attached = tasks["Create the disk in the storage domain and attach it to the VM"]
    disk_id = attached["id"]
    facts = tasks["The guest's name for the disk, and its serial"]["ansible_facts"]
    device = facts["device"]
    att = await lab.rest.attachment(vm, disk_id)
    assert att["logical_name"] == device and att["disk"]["serial"] == facts["serial"], att
    assert lab.volume(disk_id).exists() and att["disk"]["storage_domains"][0]["name"] == lab.pool
    FIGURES["ansible_attach_end_to_name_stored_s"] = await _name_lag(lab, vm, disk_id, attached)
    FIGURES["ansible_wait_task_attempts"] = tasks["Wait until the guest has named it"]["attempts"]
    FIGURES["ansible_attach_end_to_name_task_end_s"] = round(
        (tasks["Wait until the guest has named it"]["ended"] - attached["ended"]).total_seconds(),
        3,
    )

    # In the guest, by the name diskname reported: only if it is the disk with that serial.
    script, mnt, serial = FORMAT_SCRIPT.read_text(), "/mnt/pooltest", facts["serial"]
    code, _, err = await lv.VirshExec(vm).run(
        "/bin/sh", "-c", script, "format-disk", device, "not-its-serial", mnt
    )
    assert code == 1 and "not formatting it" in err, (code, err)
    said = await _in_guest(lab, "/bin/sh", "-c", script, "format-disk", device, serial, mnt)
    assert said == f"formatted and mounted {device} (serial {serial}) at {mnt}", said
    dev = device.removeprefix("/dev/")
    assert await _in_guest(lab, "/bin/cat", f"/sys/block/{dev}/serial") == att["disk"]["serial"]
    proof = f"echo {disk_id} > {mnt}/proof && sync && cat {mnt}/proof && findmnt -no SOURCE {mnt}"
    assert (await _in_guest(lab, "/bin/sh", "-c", proof)).split() == [disk_id, device]
    assert int(await _in_guest(lab, "/sbin/blockdev", "--getsize64", device)) == GIB
    await _in_guest(lab, "/bin/umount", mnt)

    removed = await asyncio.to_thread(play, REMOVE, extra, tmp_path)
    assert removed["Detach the disk"]["changed"] is True
    assert removed["Delete the disk and its image"]["changed"] is True
    assert not lab.volume(disk_id).exists()
    assert (await lab.rest.ok("GET", f"/api/disks?id={disk_id}"))["disk"] == []


async def _name_lag(lab: PoolLab, vm: str, disk_id: str, attached: dict[str, Any]) -> float:
    """Seconds from the Ansible attach task's end to the engine storing the guest's name."""
    history = await lab.rest.ok("GET", f"/api/vms/{vm}/diskattachments/{disk_id}/history")
    seen = min(
        datetime.fromisoformat(h["seen_at"]) for h in history["history"] if h["logical_name"]
    )
    ended: datetime = attached["ended"]
    return round((seen - ended.astimezone(seen.tzinfo)).total_seconds(), 3)
