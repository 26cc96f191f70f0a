"""oVirt's Ansible collection, unmodified, against a real diskname (SPEC §18, acceptance 1).

``ansible-playbook`` (ansible 10.x from PyPI: ``ovirt.ovirt`` 3.2 and ``ovirtsdk4``)
runs tests/ansible/disks.yml, and docs/automating.md's two playbooks
(docs/examples/attach-disk.yml, remove-disk.yml), as subprocesses against an engine, a sim host and
an agent, all processes (tests/ovirt_cluster.py). Every task's result is read from
Ansible's JSON callback: floating disks made in the host's storage domain,
attached (virtio and virtio_scsi) and named by the guest, the same task run
again changing nothing, the info modules, a detach and the sign-out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from .ansible_run import ANSIBLE, ATTACH, REMOVE, play
from .ovirt_cluster import PASSWORD, Cluster, running_cluster
from .test_ovirt_sdk import _database

PLAYBOOK = Path(__file__).parent / "ansible" / "disks.yml"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not ANSIBLE.exists(), reason="ansible is not installed (test extra)"),
]


@pytest.fixture(scope="module")
def engine(pg_cluster: str) -> Iterator[tuple[Cluster, str]]:
    dsn = _database(pg_cluster, "ovirt_ansible")
    with running_cluster(dsn) as c:
        c.add_vm("vm", c.host_id)
        yield c, dsn


def _play(cluster: Cluster, tmp: Path) -> dict[str, dict[str, Any]]:
    extra = {"url": cluster.url, "password": PASSWORD, "ca_file": str(cluster.ca_file),
             "vm": "vm", "host": "h1"}  # fmt: skip
    return play(PLAYBOOK, extra, tmp)


def _named_at(dsn: str, disk_id: str, name: str) -> datetime:
    """When the engine stored the guest's name of the disk (its history outlives it)."""

    async def read() -> datetime:
        conn = await asyncpg.connect(dsn)
        try:
            at: datetime = await conn.fetchval(
                """SELECT min(changed_at) FROM logical_name_history
                   WHERE disk_id = $1 AND new_name = $2""",
                disk_id,
                name,
            )
        finally:
            await conn.close()
        return at

    return asyncio.run(read())


def test_the_disk_playbook(engine: tuple[Cluster, str], tmp_path: Path) -> None:
    cluster, dsn = engine
    tasks = _play(cluster, tmp_path)
    assert all(not t.get("failed") for t in tasks.values()), tasks

    root = tasks["The VM with its disks"]["ovirt_vms"][0]["disk_attachments"]
    assert [a["logical_name"] for a in root] == ["/dev/vda"]

    attached = tasks["Create and attach new disk to VM"]
    assert attached["changed"] is True
    disk_id = attached["id"]
    assert attached["diskattachment"]["interface"] == "virtio"
    assert attached["diskattachment"]["active"] is True
    # From the attach task's end to the name stored (negative: named before it ended).
    seen = _named_at(dsn, disk_id, "/dev/vdb")
    lag = (seen - attached["ended"].astimezone(seen.tzinfo)).total_seconds()
    print(f"\nlogical_name stored {lag:+.3f} s after the attach task ended")
    assert lag < 5.0

    named = tasks["Wait for the guest's name of it"]["ovirt_vms"][0]["disk_attachments"]
    assert {a["id"]: a.get("logical_name") for a in named}[disk_id] == "/dev/vdb"

    again = tasks["Create and attach new disk to VM (again)"]
    assert again["changed"] is False and again["id"] == disk_id

    scsi = tasks["A virtio_scsi disk too"]
    assert scsi["changed"] is True and scsi["diskattachment"]["interface"] == "virtio_scsi"
    assert cluster.named("vm", scsi["id"]) == "/dev/sda"

    listed = {d["name"]: d for d in tasks["The disks"]["ovirt_disks"]}
    assert sorted(listed) == ["acc_disk", "acc_disk_scsi"]
    sizes = {n: d["provisioned_size"] for n, d in listed.items()}
    assert sizes == {"acc_disk": 1 << 30, "acc_disk_scsi": 2 << 30}
    assert all(d["status"] == "ok" and d["format"] == "cow" for d in listed.values())
    domain_ids = {sd["id"] for d in listed.values() for sd in d["storage_domains"]}

    (domain,) = tasks["The storage domain"]["ovirt_storage_domains"]
    assert domain["name"] == "data" and domain["used"] == 3 << 30 and domain["available"] > 0
    assert domain_ids == {domain["id"]}
    (host,) = tasks["The host"]["ovirt_hosts"]
    assert host["name"] == "h1" and host["status"] == "up" and host["id"] == cluster.host_id

    detached = tasks["Detach the disk"]
    assert detached["changed"] is True
    left = cluster.ok("GET", f"/api/vms/{cluster.vms['vm']}/diskattachments")["disk_attachment"]
    assert disk_id not in {a["id"] for a in left} and scsi["id"] in {a["id"] for a in left}
    assert tasks["Sign out"].get("failed") is not True

    # The detached disk is floating again: deleted with its image (its domain's bytes go).
    cluster.ok("DELETE", f"/api/disks/{disk_id}", status=204)
    (data,) = cluster.ok("GET", "/api/storagedomains?search=name%3Ddata")["storage_domain"]
    assert data["used"] == 2 << 30
    status, _ = cluster.rest("DELETE", f"/api/disks/{scsi['id']}")
    assert status == 409  # still attached


def test_the_docs_playbooks(engine: tuple[Cluster, str], tmp_path: Path) -> None:
    """docs/automating.md's playbooks, as a reader runs them: attach and name, then remove."""
    cluster, _ = engine
    extra = {"url": cluster.url, "password": PASSWORD, "ca_file": str(cluster.ca_file),
             "vm": "vm", "domain": "data"}  # fmt: skip
    tasks = play(ATTACH, extra, tmp_path)
    disk_id = tasks["Create the disk in the storage domain and attach it to the VM"]["id"]
    facts = tasks["The guest's name for the disk, and its serial"]["ansible_facts"]
    assert facts["device"] == cluster.named("vm", disk_id)
    disk = cluster.attachment("vm", disk_id)["disk"]
    assert facts["serial"] == disk["serial"] and disk["provisioned_size"] == 1 << 30
    assert disk["name"] == "vm_data" and disk["storage_domains"][0]["name"] == "data"

    removed = play(REMOVE, extra, tmp_path)
    assert removed["Detach the disk"]["changed"] is True
    assert removed["Delete the disk and its image"]["changed"] is True
    assert cluster.ok("GET", f"/api/disks?id={disk_id}")["disk"] == []
