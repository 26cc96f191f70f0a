"""A bench fleet process: several hosts, each with V simulated guests.

Run as ``python -m diskname.bench.fleet FIRST COUNT VMS STATE_DIR ...``. It
starts COUNT real :class:`HostService` instances (listen mode, sim hypervisor)
whose guests are the real agent code on the ``sim`` source (``--guests agent``)
or light guests living in the host process (``--guests light``, :mod:`.light`),
creates the VMs with a root disk each, prints one JSON line
``{"hosts": [{name, port}]}`` once everything serves, and runs until SIGTERM.
VM and disk ids are derived from the host index and VM number, so reruns
recreate the same fleet.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import uuid
from pathlib import Path

import orjson

from ..agent.service import AgentConfig, AgentService
from ..host.service import HostConfig, HostService
from ..runner import run_until_signalled, setup_logging, start_all
from .light import LightSim

NAMESPACE = uuid.UUID("6f1c8f52-2b7e-4a55-9a1e-5d0c3b1f0b7d")


def vm_id(host: int, n: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"vm/{host}/{n}"))


def root_disk_id(host: int, n: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"disk/{host}/{n}"))


class Fleet:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.indexes = range(args.first, args.first + args.count)
        self.hosts = {i: self._host(i) for i in self.indexes}

    def _host(self, index: int) -> HostService:
        root: Path = self.args.state_dir / f"h{index}"
        cfg = HostConfig(
            listen_host="127.0.0.1",
            listen_port=0,
            state_dir=root,
            channels_dir=root / "c",
            channel_mode="listen",
            host_id=f"bench-host{index}",
            qemu_ga=False,  # the simulated guests run no qemu-ga: do not dial for one
            agent_channels=self.args.guests == "agent",
        )
        if self.args.tls_dir is not None:  # the files diskname.bench.tls issued for it
            files: Path = self.args.tls_dir / f"h{index}"
            cfg = dataclasses.replace(
                cfg,
                tls_cert=files / "host.pem",
                tls_key=files / "host.key",
                tls_ca=files / "ca.pem",
            )
        if self.args.guests == "light":
            return HostService(cfg, hypervisor=LightSim(self.args.name_delay))
        return HostService(cfg, guest_launcher=self._guest)

    async def _guest(self, vm: str, channel: Path, hw: Path) -> None:
        cfg = AgentConfig(
            connect=f"unix:{channel}",
            source="sim",
            sim_hw=f"unix:{hw}",
            name_delay=self.args.name_delay,
            heartbeat_interval=self.args.heartbeat,
        )
        await AgentService(cfg).run()

    async def run(self, ready: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            await start_all(tg, self.hosts.values())
            for index, host in self.hosts.items():
                await self._populate(index, host)
            hosts = [{"name": f"bench-host{i}", "port": h.port} for i, h in self.hosts.items()]
            sys.stdout.write(orjson.dumps({"hosts": hosts}).decode() + "\n")
            sys.stdout.flush()
            ready.set()

    async def _populate(self, index: int, host: HostService) -> None:
        for n in range(self.args.vms):
            drive = {"diskId": root_disk_id(index, n), "iface": "virtio"}
            await host.create_vm(vm_id(index, n), f"bench-host{index}-vm{n}", [drive])


def main() -> None:
    p = argparse.ArgumentParser(prog="diskname.bench.fleet")
    p.add_argument("first", type=int)
    p.add_argument("count", type=int)
    p.add_argument("vms", type=int)
    p.add_argument("state_dir", type=Path)
    p.add_argument("--name-delay", type=float, default=0.05)
    p.add_argument("--heartbeat", type=float, default=5.0)
    p.add_argument("--tls-dir", type=Path, help="host-pki folder of diskname.bench.tls")
    p.add_argument("--guests", choices=["agent", "light"], default="agent")
    args = p.parse_args()
    setup_logging("WARNING")
    asyncio.run(run_until_signalled(Fleet(args).run, "bench fleet"))


if __name__ == "__main__":
    main()
