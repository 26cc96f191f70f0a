"""The benchmark of SPEC §9, end to end on real processes and real PostgreSQL.

Phases: start PostgreSQL, the fleet processes (hosts + simulated guests) and
the engine; register the hosts and let the engine discover every VM; measure
a quiet window; time N hot-plugs one after another (REST request until the
name is readable through REST); fire a burst; restart the engine and time until
it has polled every host (:mod:`.restart`); then restart it with the hash gate
off and measure the same quiet window as a naive poller's baseline.
Progress goes to stderr; the result is one JSON object.

``--guests agent`` (the default) runs the real agent for every VM; ``light``
has each host name its VMs' disks itself (:mod:`.light`), so that 100,000 VMs
fit on one machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from ..agent.service import AgentConfig
from ..config import ConfigError, like, setting
from ..dev import DevConfig
from ..engine.config import EngineConfig
from ..pgembed import EmbeddedPostgres
from .client import EngineClient
from .procs import Child, start_engine, start_fleet
from .restart import FETCHES, WRITES, measure_restart
from .stats import cdf_svg, summary_ms
from .tls import connect_ms, make_pki

# Each simulated VM holds ~6 descriptors in its fleet process (two listening
# sockets and both ends of two connections); stay well under a 20,000 limit.
VMS_PER_FLEET = 2500
# A light guest holds none: the fleet processes are sized for the two cores.
LIGHT_VMS_PER_FLEET = 25_000
Guests = Literal["agent", "light"]
GUESTS = get_args(Guests)


@dataclass(frozen=True, slots=True)
class BenchConfig:
    hosts: int = setting(2, "hosts")
    vms_per_host: int = setting(10, "simulated VMs per host")
    hotplugs: int = setting(20, "hot-plugs timed one after another")
    events: bool = like(EngineConfig, "events", help="the engine polls only")
    refresh_interval: float = like(
        EngineConfig, "refresh_interval", help="engine poll interval, seconds"
    )
    burst: int | None = setting(None, "hot-plugs fired at once", unset="min(1000, VMs)")
    quiet_seconds: float = setting(15.0, "length of the quiet window")
    baseline: bool = setting(True, "skip the naive-poller baseline")
    dsn: str | None = like(EngineConfig, "dsn", help="PostgreSQL to use", unset="an embedded one")
    name_delay: float = like(DevConfig, "name_delay", flag=False)
    heartbeat: float = like(AgentConfig, "heartbeat_interval", flag=False)
    guests: Guests = setting(
        "agent",
        "agent: the real agent per VM; light: each host names its VMs' disks, no agent per VM",
    )
    chart: Path | None = setting(None, "write an SVG of the latency distribution", metavar="FILE")
    seed: int = setting(1, "seeds the choice of VMs to plug", flag=False)
    tls: bool = setting(False, "mutual TLS engine <-> hosts, with certificates from diskname.pki")


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Bench:
    def __init__(self, config: BenchConfig) -> None:
        if config.guests not in GUESTS:
            raise ConfigError(f"guests must be one of {', '.join(GUESTS)}: {config.guests!r}")
        self.cfg = config
        self.total_vms = config.hosts * config.vms_per_host
        self.rng = random.Random(config.seed)
        self.fleets: list[Child] = []
        self.hosts: list[dict[str, Any]] = []
        self.pki_dir: Path | None = None

    async def run(self) -> dict[str, Any]:
        with self._workspace() as state:
            async with self._postgres() as dsn:
                await self._start_fleets(state)
                try:
                    return await self._measure(state, dsn)
                except BaseException:
                    for log in sorted(state.glob("*.log")):
                        progress(f"--- last lines of {log.name}\n{log.read_text()[-2500:]}")
                    raise
                finally:
                    for fleet in self.fleets:
                        await fleet.stop()

    @contextlib.contextmanager
    def _workspace(self) -> Iterator[Path]:
        base = "/dev/shm" if Path("/dev/shm").is_dir() else None
        state = Path(tempfile.mkdtemp(prefix="dnb", dir=base))
        try:
            yield state
        finally:
            shutil.rmtree(state, ignore_errors=True)

    @contextlib.asynccontextmanager
    async def _postgres(self) -> AsyncIterator[str]:
        if self.cfg.dsn:
            yield self.cfg.dsn
            return
        progress("starting embedded PostgreSQL")
        pg = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="dnbpg")))
        try:
            yield await pg.start()
        finally:
            await pg.stop()
            shutil.rmtree(pg.data_dir, ignore_errors=True)

    async def _start_fleets(self, state: Path) -> None:
        per_fleet = max(1, self._vms_per_fleet() // max(1, self.cfg.vms_per_host))
        opts = ["--name-delay", str(self.cfg.name_delay), "--heartbeat", str(self.cfg.heartbeat)]
        if self.cfg.tls:
            self.pki_dir = make_pki(state, self.cfg.hosts)
            opts += ["--tls-dir", str(state / "host-pki")]
        starts = []
        for index, first in enumerate(range(0, self.cfg.hosts, per_fleet)):
            count = min(per_fleet, self.cfg.hosts - first)
            starts.append(
                start_fleet(
                    index, first, count, self.cfg.vms_per_host, state, opts, self.cfg.guests
                )
            )
        progress(
            f"starting {len(starts)} fleet process(es): {self.cfg.hosts} hosts, "
            f"{self.total_vms} VMs with simulated guests ({self.cfg.guests})"
        )
        for child, hosts in await asyncio.gather(*starts):
            self.fleets.append(child)
            self.hosts += hosts

    def _vms_per_fleet(self) -> int:
        return LIGHT_VMS_PER_FLEET if self.cfg.guests == "light" else VMS_PER_FLEET

    async def _measure(self, state: Path, dsn: str) -> dict[str, Any]:
        async with self._engine(state, dsn, hash_gate=True, tag="gated") as engine:
            await self._register(engine)
            await self._settle(engine)
            steady = await self._quiet_window(engine)
            latencies = await self._hotplugs(engine)
            burst = await self._burst(engine)
            memory = engine[0].rss_mib()
        result: dict[str, Any] = {
            "hosts": self.cfg.hosts,
            "vms": self.total_vms,
            "guests": self.cfg.guests,
            "hotplugs": self.cfg.hotplugs,
            "events": self.cfg.events,
            "latency_ms": summary_ms(latencies),
            "steady": steady,
            "burst": burst,
            "refresh_interval": self.cfg.refresh_interval,
            "tls": self.cfg.tls,
            "host_connect_ms": await connect_ms(self.hosts[0]["port"], self.pki_dir),
        }
        result["engine_rss_mib"] = memory
        result["restart"] = await self._restart(state, dsn)
        if self.cfg.baseline:
            result["baseline"] = await self._baseline(state, dsn)
            result["hash_gate_savings"] = savings(steady, result["baseline"])
        if self.cfg.chart is not None:
            label = "with notifications" if self.cfg.events else "polling only"
            title = f"{self.total_vms} VMs on {self.cfg.hosts} hosts, {len(latencies)} hot-plugs"
            self.cfg.chart.write_text(cdf_svg({label: latencies}, title))
            progress(f"chart written to {self.cfg.chart}")
        return result

    @contextlib.asynccontextmanager
    async def _engine(
        self, state: Path, dsn: str, *, hash_gate: bool, tag: str
    ) -> AsyncIterator[tuple[Child, EngineClient]]:
        port = free_port()
        child = await start_engine(
            dsn,
            port,
            self.cfg.refresh_interval,
            state,
            events=self.cfg.events,
            hash_gate=hash_gate,
            tag=tag,
            pki_dir=self.pki_dir,
        )
        client = EngineClient(f"http://127.0.0.1:{port}")
        try:
            await self._until(client.healthy, 120, f"engine ({tag}) healthy", child)
            await client.listen()
            yield child, client
        finally:
            await client.close()
            await child.stop()

    async def _until(
        self, check: Any, timeout: float, what: str, child: Child, interval: float = 0.1
    ) -> None:
        deadline = time.monotonic() + timeout
        while not await check():
            if child.proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what}: not reached\n{child.tail()}")
            await asyncio.sleep(interval)

    async def _register(self, engine: tuple[Child, EngineClient]) -> None:
        _, client = engine
        known = {h["name"] for h in (await client.json("GET", "/api/hosts"))["host"]}
        for host in self.hosts:
            if host["name"] not in known:
                body = {"name": host["name"], "address": "127.0.0.1", "port": host["port"]}
                await client.json("POST", "/api/hosts", body, ok=201)
        progress(f"registered {len(self.hosts)} hosts")

    async def _settle(self, engine: tuple[Child, EngineClient]) -> None:
        """Wait until the engine knows every VM and its counters stop moving."""
        child, client = engine

        async def all_vms() -> bool:
            return len((await client.json("GET", "/api/vms"))["vm"]) >= self.total_vms

        # Listing 100,000 VMs is work for the engine too: ask less often for more.
        every = max(0.1, self.total_vms / 20_000)
        await self._until(all_vms, 900, "every VM discovered", child, every)
        window = max(2 * self.cfg.refresh_interval, 1.0)
        last: tuple[float, float] | None = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            m = await client.metrics()
            now = (m["diskname_engine_full_list_calls_total"], m["diskname_engine_db_writes_total"])
            if now == last:
                progress(f"engine settled: {self.total_vms} VMs known")
                return
            last = now
            await asyncio.sleep(window)
        raise RuntimeError("engine did not settle")

    async def _quiet_window(self, engine: tuple[Child, EngineClient]) -> dict[str, Any]:
        child, client = engine
        progress(f"quiet window: {self.cfg.quiet_seconds:g} s with nothing changing")
        m0, cpu0 = await client.metrics(), child.cpu_seconds()
        await asyncio.sleep(self.cfg.quiet_seconds)
        m1, cpu1 = await client.metrics(), child.cpu_seconds()

        def delta(key: str) -> int:
            return int(m1.get(key, 0) - m0.get(key, 0))

        polls = delta("diskname_engine_polls_total")
        cycles = polls / max(1, self.cfg.hosts)
        return {
            "cycles": round(cycles, 1),
            "full_list_calls": delta("diskname_engine_full_list_calls_total"),
            "db_writes": delta("diskname_engine_db_writes_total"),
            "engine_cpu_ms_per_cycle": round((cpu1 - cpu0) * 1000 / cycles, 1) if cycles else None,
            "engine_rss_mib": child.rss_mib()["rss"],
        }

    def _random_vm(self, vm_ids: list[str]) -> str:
        return self.rng.choice(vm_ids)

    async def _vm_ids(self, client: EngineClient) -> list[str]:
        return sorted(str(vm["id"]) for vm in (await client.json("GET", "/api/vms"))["vm"])

    async def _hotplugs(self, engine: tuple[Child, EngineClient]) -> list[float]:
        _, client = engine
        vm_ids = await self._vm_ids(client)
        progress(f"{self.cfg.hotplugs} hot-plugs, one after another")
        latencies = []
        for i in range(self.cfg.hotplugs):
            latencies.append(await self._one_hotplug(client, self._random_vm(vm_ids)))
            if (i + 1) % max(1, self.cfg.hotplugs // 5) == 0:
                progress(f"  {i + 1}/{self.cfg.hotplugs} named")
        return latencies

    async def _one_hotplug(self, client: EngineClient, vm_id: str) -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        disk = await client.hotplug(vm_id)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client.expect(disk), self.cfg.refresh_interval * 3 + 30)
        while await client.name_of(vm_id, disk) is None:
            if loop.time() - start > self.cfg.refresh_interval * 3 + 60:
                raise RuntimeError(f"disk {disk} of VM {vm_id} was never named")
            await asyncio.sleep(0.005)
        return loop.time() - start

    async def _burst(self, engine: tuple[Child, EngineClient]) -> dict[str, Any]:
        child, client = engine
        count = self.cfg.burst if self.cfg.burst is not None else min(1000, self.total_vms)
        vm_ids = await self._vm_ids(client)
        targets = (
            self.rng.sample(vm_ids, count)
            if count <= len(vm_ids)
            else [self._random_vm(vm_ids) for _ in range(count)]
        )
        progress(f"burst: {count} hot-plugs at once")
        m0, cpu0 = await client.metrics(), child.cpu_seconds()
        loop = asyncio.get_running_loop()
        start = loop.time()
        disks = await asyncio.gather(*(client.hotplug(vm) for vm in targets))
        accepted_ms = (loop.time() - start) * 1000
        futures = [client.expect(d) for d in disks]
        done, pending = await asyncio.wait(futures, timeout=self.cfg.refresh_interval * 3 + 60)
        for future in pending:
            future.cancel()
        last = max((f.result() for f in done), default=math.nan)
        m1, cpu1 = await client.metrics(), child.cpu_seconds()
        progress(f"burst: {len(done)} of {count} named")
        unnamed = sum(
            [await client.name_of(vm, d) is None for vm, d in zip(targets, disks, strict=True)]
        )
        return {
            "hotplugs": count,
            "all_visible_ms": round((last - start) * 1000, 1) if not pending else None,
            "requests_accepted_ms": round(accepted_ms, 1),
            "unnamed": unnamed,
            # What the burst cost the engine, until the last name was announced.
            "full_list_calls": int(m1[FETCHES] - m0[FETCHES]),
            "db_writes": int(m1[WRITES] - m0[WRITES]),
            "engine_cpu_ms": round((cpu1 - cpu0) * 1000),
        }

    async def _restart(self, state: Path, dsn: str) -> dict[str, Any]:
        progress("restart: a new engine under the same fleet")
        started = asyncio.get_running_loop().time()
        async with self._engine(state, dsn, hash_gate=True, tag="restarted") as engine:
            out = await measure_restart(engine, started, self.cfg.hosts, self.cfg.refresh_interval)
        progress(f"restart: {out['hosts_polled']} hosts polled, {out['full_list_calls']} fetches")
        return out

    async def _baseline(self, state: Path, dsn: str) -> dict[str, Any]:
        progress("baseline: the same fleet with the hash gate off (every VM fetched every cycle)")
        async with self._engine(state, dsn, hash_gate=False, tag="baseline") as engine:
            await asyncio.sleep(2 * self.cfg.refresh_interval)
            return await self._quiet_window(engine)


def savings(gated: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """How much the hash gate saves, as ratios baseline / gated (None: gated is 0)."""

    def ratio(key: str) -> float | None:
        g, b = gated.get(key), baseline.get(key)
        if not g or b is None:
            return None
        return round(float(b) / float(g), 1)

    return {
        "engine_cpu_ratio": ratio("engine_cpu_ms_per_cycle"),
        "full_list_calls_saved": baseline["full_list_calls"] - gated["full_list_calls"],
        "db_writes_saved": baseline["db_writes"] - gated["db_writes"],
        "full_list_calls_ratio": ratio("full_list_calls"),
        "db_writes_ratio": ratio("db_writes"),
    }
