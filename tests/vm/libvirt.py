"""The cached Debian guest (tests/vm/image.py) as a libvirt domain, and a real libvirtd.

The domain is what a libvirt user would write for diskname (docs/deploy.md,
"A hypervisor host with libvirt"): q35 with ``<acpi/>`` and spare
``pcie-root-port`` controllers (virtio hot-plug), a virtio-scsi controller
(SCSI hot-plug), the ``ovirt-guest-agent.0`` unix channel the host connects
to and an ``org.qemu.guest_agent.0`` channel libvirt itself owns (guest info).
TCG, as FACTS §7 says for this machine; kernel and initrd boot (a reboot from
inside the guest restarts it in place, hot-plugged disks and all); the agent's
archive over 9p (image.agent_share) for the image's agent unit. How the guest
starts its agent is the image recipe's business, not this file's.

libvirtd comes from ``.ci/libvirt-setup`` (CI runs it; run it by hand as root
on a development machine). Tests skip with the reason when it is not there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from .guest import MEMORY_MB, make_overlay
from .guestexec import run_with
from .image import MOUNT_TAG, Image, agent_share
from .qemu import kvm_usable

URI = "qemu:///system"
AGENT_PORT = "ovirt-guest-agent.0"
QGA_PORT = "org.qemu.guest_agent.0"
# Devices that take a root port each at start (root disk, virtio-serial,
# virtio-scsi, 9p) plus spare ones for hot-plugs (FACTS §8).
ROOT_PORTS = 12
SETUP = ".ci/libvirt-setup"


def virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["virsh", "-q", "-c", URI, *args], capture_output=True, text=True, check=check, timeout=60
    )


def skip_reason() -> str | None:
    """Why the libvirt tests cannot run here, or None."""
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "libvirt-python is missing (pip install -e '.[libvirt]'; needs libvirt-dev)"
    if shutil.which("virsh") is None:
        return f"virsh is missing (run {SETUP} as root)"
    try:
        answered = virsh("version").returncode == 0
    except (OSError, subprocess.SubprocessError):
        answered = False
    return None if answered else f"libvirtd does not answer on {URI} (run {SETUP} as root)"


@dataclass(frozen=True, slots=True)
class DomainSpec:
    uuid: str
    name: str
    root_serial: str
    workdir: Path
    agent: bool = True
    qemu_ga: bool = True

    @property
    def agent_socket(self) -> Path:
        return self.workdir / f"{self.uuid}.{AGENT_PORT}"

    @property
    def console(self) -> Path:
        return self.workdir / "console.log"

    @property
    def overlay(self) -> Path:
        return self.workdir / "root.qcow2"

    @property
    def share(self) -> Path:
        """What the guest mounts at /opt/diskname: diskname-agent.pyz."""
        return self.workdir / "share"


def _channels(spec: DomainSpec) -> str:
    out = []
    if spec.agent:
        out.append(f"""
    <channel type='unix'>
      <source mode='bind' path={quoteattr(str(spec.agent_socket))}/>
      <target type='virtio' name='{AGENT_PORT}'/>
    </channel>""")
    if spec.qemu_ga:
        out.append(f"""
    <channel type='unix'>
      <target type='virtio' name='{QGA_PORT}'/>
    </channel>""")
    return "".join(out)


def domain_xml(image: Image, spec: DomainSpec) -> str:
    accel = "kvm" if kvm_usable() else "qemu"
    ports = "".join(
        "\n    <controller type='pci' model='pcie-root-port'/>" for _ in range(ROOT_PORTS)
    )
    cmdline = "root=/dev/vda rw console=ttyS0 systemd.journald.forward_to_console=1"
    return f"""<domain type='{accel}'>
  <name>{spec.name}</name>
  <uuid>{spec.uuid}</uuid>
  <memory unit='MiB'>{MEMORY_MB}</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{image.kernel}</kernel>
    <initrd>{image.initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file={quoteattr(str(spec.overlay))}/>
      <target dev='vda' bus='virtio'/>
      <serial>{spec.root_serial}</serial>
    </disk>
    <controller type='pci' index='0' model='pcie-root'/>{ports}
    <controller type='scsi' index='0' model='virtio-scsi'/>
    <controller type='usb' model='none'/>
    <controller type='virtio-serial' index='0'/>{_channels(spec)}
    <filesystem type='mount' accessmode='squash'>
      <source dir={quoteattr(str(spec.share))}/>
      <target dir='{MOUNT_TAG}'/>
      <readonly/>
    </filesystem>
    <serial type='file'>
      <source path={quoteattr(str(spec.console))}/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""


@contextlib.asynccontextmanager
async def running_domain(image: Image, spec: DomainSpec) -> AsyncIterator[None]:
    """A transient domain running the guest until the block ends (destroyed then).

    Boot is not awaited. Transient (``virsh create``): nothing stays defined in
    libvirtd after the test, even if the test process dies.
    """
    await make_overlay(image, spec.overlay)
    agent_share(spec.share)
    xml = spec.workdir / "domain.xml"
    xml.write_text(domain_xml(image, spec))
    created = await asyncio.to_thread(virsh, "create", str(xml), check=False)
    assert created.returncode == 0, created.stderr
    try:
        yield
    finally:
        await asyncio.to_thread(virsh, "destroy", spec.uuid, check=False)


# libvirt's refusal while another agent call holds the domain, and how long it may last.
AGENT_BUSY = "cannot acquire state change lock"
AGENT_BUSY_FOR = 120.0


class VirshExec:
    """Programs run in a domain's guest through libvirt's own qemu-ga channel.

    ``virsh qemu-agent-command`` (libvirt marks the domain tainted by it; only
    the tests do this). The same ``run`` as :class:`~.guestexec.GuestExec`.
    """

    def __init__(self, domain: str) -> None:
        self.domain = domain

    async def call(self, name: str, arguments: dict[str, Any]) -> Any:
        command = json.dumps({"execute": name, "arguments": arguments})
        argv = ("qemu-agent-command", self.domain, "--timeout", "30", command)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + AGENT_BUSY_FOR
        while True:
            try:
                done = await asyncio.to_thread(virsh, *argv, check=False)
            except subprocess.TimeoutExpired as exc:
                raise AssertionError(f"{name}: virsh did not answer: {exc}") from None
            if done.returncode == 0:
                return json.loads(done.stdout)["return"]
            # The host's own guestInfo held the domain's agent job past virsh's 30 s wait
            # (a guest coming back from a reboot answers it late): nothing reached the
            # guest, so the command is sent again.
            if AGENT_BUSY not in done.stderr or loop.time() > deadline:
                raise AssertionError(f"{name} failed: {done.stderr.strip()}")

    async def run(self, path: str, *args: str, timeout: float = 120.0) -> tuple[int, str, str]:
        return await run_with(self.call, path, *args, timeout=timeout)

    def close(self) -> None:
        """Nothing to close: each call is its own virsh."""


def console_tail(spec: DomainSpec, chars: int = 6000) -> str:
    try:
        return spec.console.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
