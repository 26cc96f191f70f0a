"""A host's storage domains (SPEC §18): the wire's shapes, the memory (sim) and directory
(qemu) domains with the real qemu-img, and the JSON-RPC methods over loopback TCP."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from diskname.host.devices import Addresses, Device, InvalidDevice, device_for
from diskname.host.hypervisors.images import StorageError
from diskname.host.storage import DirectoryDomain, MemoryDomain, UnknownDomain
from diskname.protocol.host_wire import Code
from diskname.protocol.storage_wire import (
    BadHostMessage,
    ImageRequest,
    StorageDomainInfo,
    parse_domains,
)
from diskname.streams import JsonRpcClient, RpcError

from .conftest import running_host

pytestmark = pytest.mark.timeout(30)
GIB = 1 << 30


def new_id() -> str:
    return str(uuid.uuid4())


# -- the wire ----------------------------------------------------------------------


@given(st.builds(ImageRequest, st.just("data"), st.uuids().map(str), st.integers(1, 1 << 53)))
def test_image_requests_round_trip(request: ImageRequest) -> None:
    assert ImageRequest.from_wire(request.to_wire()) == request


@pytest.mark.parametrize(
    "raw",
    [
        {"storageDomain": "../etc", "diskId": str(uuid.uuid4()), "size": 1},
        {"storageDomain": "data", "diskId": "not-a-uuid", "size": 1},
        {"storageDomain": "data", "diskId": str(uuid.uuid4()), "size": 0},
        {"storageDomain": "data", "diskId": str(uuid.uuid4()), "size": True},
        {"storageDomain": "data", "diskId": str(uuid.uuid4()), "size": 1, "format": "vmdk"},
        [],
    ],
)
def test_bad_image_requests_are_refused(raw: Any) -> None:
    with pytest.raises(BadHostMessage):
        ImageRequest.from_wire(raw)


@given(
    st.recursive(
        st.none() | st.integers() | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c)
    )
)
def test_a_lying_hosts_domain_list_parses_or_is_refused(raw: Any) -> None:
    try:
        domains = parse_domains({"domains": raw})
    except BadHostMessage:
        return
    assert all(isinstance(d, StorageDomainInfo) for d in domains)


def test_devices_carry_a_size_and_domain_only_when_given() -> None:
    disk = new_id()
    plain = device_for({"diskId": disk, "iface": "virtio"}, Addresses(()))
    assert "size" not in plain.to_json() and "storageDomain" not in plain.to_json()
    placed = device_for(
        {"diskId": disk, "iface": "virtio", "size": GIB, "storageDomain": "data"}, Addresses(())
    )
    assert (placed.size, placed.domain) == (GIB, "data")
    assert Device.from_json(placed.to_json()) == placed
    with pytest.raises(InvalidDevice):
        device_for({"diskId": disk, "iface": "virtio", "storageDomain": "a/b"}, Addresses(()))


# -- the domains ---------------------------------------------------------------------


async def test_a_memory_domain_counts_its_images() -> None:
    domain = MemoryDomain("data", capacity=3 * GIB)
    disk = new_id()
    await domain.create(ImageRequest("data", disk, GIB))
    await domain.create(ImageRequest("data", disk, GIB))  # idempotent
    (info,) = await domain.list()
    assert (info.name, info.kind, info.used, info.available) == ("data", "memory", GIB, 2 * GIB)
    with pytest.raises(StorageError, match="no room"):
        await domain.create(ImageRequest("data", new_id(), 4 * GIB))
    with pytest.raises(UnknownDomain):
        await domain.create(ImageRequest("other", new_id(), GIB))
    assert await domain.delete("data", disk) is True and await domain.delete("data", disk) is False


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img not installed")
async def test_a_directory_domain_makes_qcow2_images_of_the_size(tmp_path: Path) -> None:
    domain = DirectoryDomain("data", tmp_path / "images")
    disk = new_id()
    await domain.create(ImageRequest("data", disk, 3 * GIB, "raw", False))
    proc = await asyncio.create_subprocess_exec(
        "qemu-img", "info", "--output=json", str(domain.path(disk)), stdout=asyncio.subprocess.PIPE
    )
    details = json.loads((await proc.communicate())[0])
    assert details["format"] == "qcow2" and details["virtual-size"] == 3 * GIB
    (info,) = await domain.list()
    assert info.kind == "directory" and 0 < info.used < GIB and info.available > 0
    assert await domain.delete("data", disk) is True
    assert not domain.path(disk).exists()


# -- over JSON-RPC ---------------------------------------------------------------------


async def test_the_host_lists_domains_and_makes_images(short_dir: Path) -> None:
    async with (
        running_host(short_dir) as host,
        await JsonRpcClient.connect("127.0.0.1", host.port) as c,
    ):
        (listed,) = (await c.call("Host.getStorageDomains"))["domains"]
        assert listed["name"] == "data" and listed["kind"] == "memory"
        disk = new_id()
        request = ImageRequest("data", disk, 2 * GIB).to_wire()
        assert await c.call("Image.create", request) is True
        (listed,) = (await c.call("Host.getStorageDomains"))["domains"]
        assert listed["used"] == 2 * GIB
        with pytest.raises(RpcError) as refused:
            await c.call("Image.create", {**request, "storageDomain": "nfs"})
        assert refused.value.code == Code.HYPERVISOR_ERROR
        with pytest.raises(RpcError) as bad:
            await c.call("Image.create", {**request, "size": -1})
        assert bad.value.code == -32602
        params = {"storageDomain": "data", "diskId": disk}
        assert await c.call("Image.delete", params) is True
        assert await c.call("Image.delete", params) is False
