"""The host's VM state files against a real folder: modes, atomic writes, a corrupt
file moved aside, a full disk refused to the caller and retried, and concurrent
writes sharing one pass."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path

import orjson
import pytest

from diskname.host import statefiles
from diskname.host.devices import devices_for
from diskname.host.statefiles import StateFiles, StateNotWritten
from diskname.host.vm import AGENT, VmState

from .conftest import wait_until

pytestmark = pytest.mark.timeout(10)


class States:
    """The VMs' current states, as the registry would hand them to the files."""

    def __init__(self) -> None:
        self.by_id: dict[str, VmState] = {}

    def put(self, state: VmState) -> str:
        self.by_id[state.id] = state
        return state.id

    def __call__(self, vm_id: str) -> VmState | None:
        return self.by_id.get(vm_id)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def states() -> States:
    return States()


@pytest.fixture
def files(tmp_path: Path, states: States) -> StateFiles:
    store = StateFiles(tmp_path / "state" / "vms", states)
    assert store.load() == []  # makes the folders
    return store


DEVICES = devices_for([{"diskId": "0b1f4bd4-9c5e-4d4e-8f6b-2a9a4c1e7d10", "iface": "nvme"}])


def a_vm(vm_id: str = "v1") -> VmState:
    return VmState.new(vm_id, "web", DEVICES, {AGENT: {"s": {"name": "/dev/vdb"}}}, "Paused")


async def test_a_written_vm_is_private_and_loads_back_as_it_was(
    files: StateFiles, states: States
) -> None:
    os.chmod(files.folder, 0o755)  # whatever it was, the next load makes it private
    vm_id = states.put(a_vm())
    await files.persist(vm_id)
    path = files.folder / f"{vm_id}.json"
    assert mode(path) == 0o600
    assert list(files.folder.iterdir()) == [path]  # no temporary file left behind
    assert StateFiles(files.folder, states).load() == [a_vm()]
    assert mode(files.folder) == 0o700 and mode(files.folder.parent) == 0o700


async def test_a_vm_that_went_loses_its_file(files: StateFiles, states: States) -> None:
    vm_id = states.put(a_vm())
    await files.persist(vm_id)
    del states.by_id[vm_id]
    await files.persist(vm_id)
    assert list(files.folder.iterdir()) == []


async def test_corrupt_files_are_moved_aside_and_the_rest_loads(
    files: StateFiles, states: States, caplog: pytest.LogCaptureFixture
) -> None:
    await files.persist(states.put(a_vm("good")))
    (files.folder / "cut.json").write_bytes(b'{"vmId": "x", "devices": {not json')
    (files.folder / "shape.json").write_bytes(orjson.dumps({"vmId": 5, "name": []}))
    with caplog.at_level(logging.ERROR, "diskname.host.statefiles"):
        loaded = StateFiles(files.folder, states).load()
    assert [s.id for s in loaded] == ["good"]
    aside = sorted(p.name for p in files.folder.glob("*.corrupt-*"))
    assert [name.split(".corrupt-")[0] for name in aside] == ["cut.json", "shape.json"]
    assert all(name.split(".corrupt-")[1].isdigit() for name in aside)
    assert sum("moved aside" in r.getMessage() for r in caplog.records) == 2


async def test_a_full_disk_refuses_the_change_and_the_vm_is_written_on_the_next_pass(
    files: StateFiles, states: States, caplog: pytest.LogCaptureFixture
) -> None:
    vm_id = states.put(a_vm())
    # The temporary file the write goes through leads to /dev/full: a real ENOSPC.
    tmp = files.folder / f".{vm_id}.json.tmp"
    tmp.symlink_to("/dev/full")
    with (
        caplog.at_level(logging.ERROR, "diskname.host.statefiles"),
        pytest.raises(StateNotWritten, match="the disk is full"),
    ):
        await files.persist(vm_id)  # not to be acknowledged
    assert not (files.folder / f"{vm_id}.json").exists() and not tmp.exists()
    assert any("the disk is full" in r.getMessage() for r in caplog.records)
    await files.flush()  # still marked: the next pass writes it
    assert StateFiles(files.folder, states).load() == [a_vm()]
    await files.persist(vm_id)  # written: no longer refused


async def test_only_the_vm_whose_write_failed_is_refused(files: StateFiles, states: States) -> None:
    full, fine = states.put(a_vm("full")), states.put(a_vm("fine"))
    for vm_id in (full, fine):
        (files.folder / f".{vm_id}.json.tmp").symlink_to("/dev/full")
        await files.persist_or_retry(vm_id)  # a change that cannot be refused: logged only
    (files.folder / f".{full}.json.tmp").symlink_to("/dev/full")  # still full for one
    results = await asyncio.gather(files.persist(full), files.persist(fine), return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["StateNotWritten", "NoneType"]


async def test_the_background_writer_retries_until_the_file_is_written(
    tmp_path: Path, states: States
) -> None:
    files = StateFiles(tmp_path / "vms", states, write_interval=0.01)
    files.load()
    vm_id = states.put(a_vm())
    blocker = files.folder / f"{vm_id}.json"
    (blocker / "in-the-way").mkdir(parents=True)  # a folder where the file goes
    await files.persist_or_retry(vm_id)  # fails, and leaves the VM marked
    writer = asyncio.create_task(files.flush_forever())
    try:
        (blocker / "in-the-way").rmdir()
        blocker.rmdir()
        await wait_until(blocker.is_file)
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
    assert StateFiles(files.folder, states).load() == [a_vm()]


async def test_concurrent_writes_share_one_pass_and_one_folder_fsync(
    files: StateFiles, states: States, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    real_fsync_dir = statefiles._fsync_dir

    def counting(folder: Path) -> None:
        synced.append(folder)
        real_fsync_dir(folder)

    monkeypatch.setattr(statefiles, "_fsync_dir", counting)
    ids = [states.put(a_vm(f"v{n}")) for n in range(10)]
    # The first write starts a pass alone; the nine that wait behind it share the next.
    await asyncio.gather(*(files.persist(vm_id) for vm_id in ids))
    assert synced == [files.folder, files.folder]
    assert sorted(p.stem for p in files.folder.glob("*.json")) == sorted(ids)
