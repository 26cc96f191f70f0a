"""Start QEMU for tests and always kill it: bare machines (no guest) and booted guests."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from tests.conftest import wait_until

QEMU = "qemu-system-x86_64"
ROOT_PORTS = 8
SCSI_CONTROLLER = "scsi0"


def have_qemu() -> bool:
    return shutil.which(QEMU) is not None and shutil.which("qemu-img") is not None


def kvm_usable() -> bool:
    """KVM only where a stock kernel module drives it (FACTS §7: PVM-based KVM hangs)."""
    modules = Path("/proc/modules")
    if not modules.exists() or not Path("/dev/kvm").exists():
        return False
    loaded = {line.split()[0] for line in modules.read_text().splitlines() if line}
    return bool(loaded & {"kvm_intel", "kvm_amd"})


def accel() -> list[str]:
    return ["-accel", "kvm", "-cpu", "host"] if kvm_usable() else ["-accel", "tcg,thread=multi"]


def hotplug_buses() -> list[str]:
    """Empty pcie-root-ports ``rp1``.. and a virtio-scsi controller ``scsi0`` (docs/design.md)."""
    args: list[str] = []
    for n in range(1, ROOT_PORTS + 1):
        args += ["-device", f"pcie-root-port,id=rp{n},chassis={n},bus=pcie.0"]
    return [*args, "-device", f"virtio-scsi-pci,id={SCSI_CONTROLLER},bus=pcie.0"]


def qmp_monitor(path: Path) -> list[str]:
    return ["-qmp", f"unix:{path},server=on,wait=off"]


def bare_machine(*qmp: Path) -> list[str]:
    """A q35 machine with hot-plug buses and no guest, stopped (-S): fast, no boot.

    One QMP monitor per path (QEMU serves one client per monitor at a time).
    """
    monitors = [arg for path in qmp for arg in qmp_monitor(path)]
    return [
        QEMU, "-machine", "q35", "-accel", "tcg", "-nodefaults", "-display", "none", "-S",
        *monitors, *hotplug_buses(),
    ]  # fmt: skip


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:]


async def _accepts(path: Path) -> bool:
    try:
        _, writer = await asyncio.open_unix_connection(str(path))
    except OSError:
        return False
    writer.close()
    return True


@contextlib.asynccontextmanager
async def running(
    args: Sequence[str], log: Path, qmp: Path, timeout: float = 30.0
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run QEMU until the block ends (then kill it); enter once ``qmp`` accepts connections."""
    _remove(qmp)  # a socket left by an earlier run would look ready
    with open(log, "ab") as out:  # noqa: ASYNC230 - a local log file
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:

        async def ready() -> bool:
            if proc.returncode is not None:
                raise AssertionError(f"QEMU exited {proc.returncode}: {_tail(log)}")
            return await _accepts(qmp)

        await wait_until(ready, timeout=timeout, interval=0.02)
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
