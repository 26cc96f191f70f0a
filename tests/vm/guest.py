"""A booted Debian guest under QEMU, wired to a diskname host by the channels-dir convention.

``<channels-dir>/<vm_id>.qmp`` (QMP), ``<vm_id>.ovirt-guest-agent.0`` (the
diskname agent's virtio-serial port) and ``<vm_id>.org.qemu.guest_agent.0``
(qemu-ga's) are UNIX sockets QEMU serves; the host connects to them. The
guest's root disk is a throw-away qcow2 overlay on the cached image, and the
agent's archive reaches the guest over 9p for the agent unit (tests/vm/image.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from .image import MOUNT_TAG, Image
from .qemu import QEMU, accel, hotplug_buses, qmp_monitor, running

MEMORY_MB = 1024


@dataclass(frozen=True, slots=True)
class GuestSpec:
    vm_id: str
    root_serial: str
    channels: Path
    workdir: Path
    share: Path  # holds diskname-agent.pyz (image.agent_share)
    agent: bool = True  # the ovirt-guest-agent.0 port, which starts the diskname agent
    qemu_ga: bool = False  # the org.qemu.guest_agent.0 port, which starts qemu-ga
    # The same port for the test itself (guest-exec), outside the channels folder.
    probe: bool = False

    @property
    def probe_socket(self) -> Path:
        return self.workdir / "probe-qga.sock"

    @property
    def qmp(self) -> Path:
        return self.channels / f"{self.vm_id}.qmp"

    @property
    def console(self) -> Path:
        return self.workdir / "console.log"

    def port(self, name: str) -> list[str]:
        path, chardev = self.channels / f"{self.vm_id}.{name}", f"ch-{name}"
        return [
            "-chardev", f"socket,id={chardev},path={path},server=on,wait=off",
            "-device", f"virtserialport,bus=vser0.0,chardev={chardev},name={name}",
        ]  # fmt: skip


def qemu_args(image: Image, spec: GuestSpec, overlay: Path) -> list[str]:
    ports: list[str] = []
    if spec.agent:
        ports += spec.port("ovirt-guest-agent.0")
    if spec.qemu_ga:
        ports += spec.port("org.qemu.guest_agent.0")
    elif spec.probe:
        ports += [
            "-chardev", f"socket,id=ch-probe,path={spec.probe_socket},server=on,wait=off",
            "-device", "virtserialport,bus=vser0.0,chardev=ch-probe,name=org.qemu.guest_agent.0",
        ]  # fmt: skip
    cmdline = "root=/dev/vda rw console=ttyS0 systemd.journald.forward_to_console=1"
    return [
        QEMU, "-machine", "q35", *accel(), "-m", str(MEMORY_MB), "-smp", "2",
        "-nodefaults", "-display", "none", "-serial", f"file:{spec.console}",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", cmdline,
        "-blockdev", f"driver=qcow2,node-name=root,file.driver=file,file.filename={overlay}",
        "-device", f"virtio-blk-pci,drive=root,id=root,bus=pcie.0,serial={spec.root_serial}",
        "-device", "virtio-serial-pci,id=vser0,bus=pcie.0", *ports,
        "-virtfs", f"local,path={spec.share},mount_tag={MOUNT_TAG},security_model=none,readonly=on",
        *qmp_monitor(spec.qmp), *hotplug_buses(),
    ]  # fmt: skip


async def make_overlay(image: Image, overlay: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image.rootfs),
        str(overlay),
    )  # fmt: skip
    assert await proc.wait() == 0, "qemu-img could not create the overlay"


@contextlib.asynccontextmanager
async def booted(image: Image, spec: GuestSpec) -> AsyncIterator[asyncio.subprocess.Process]:
    """QEMU running the guest until the block ends (killed then). Boot is not awaited."""
    overlay = spec.workdir / "root.qcow2"
    await make_overlay(image, overlay)
    args = qemu_args(image, spec, overlay)
    # The host will hold the QMP socket, so readiness is checked on a second monitor.
    probe = spec.workdir / "probe.qmp"
    async with running([*args, *qmp_monitor(probe)], spec.workdir / "qemu.log", probe) as proc:
        yield proc


def console_text(spec: GuestSpec) -> str:
    try:
        return spec.console.read_text(errors="replace")
    except OSError:
        return ""


def console_tail(spec: GuestSpec, chars: int = 6000) -> str:
    try:
        return spec.console.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
