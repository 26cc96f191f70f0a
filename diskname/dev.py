"""Dev mode: the engine, H hosts and their simulated guests in one process.

Everything talks over real sockets exactly as in production (TCP JSON-RPC
between engine and hosts, UNIX-socket agent channels between hosts and
guests); only the hypervisor and the guests' disks are simulated. The engine
keeps its data in an embedded PostgreSQL under ``state_dir``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from .agent.service import AgentConfig, AgentService
from .binding import BindError, ensure_free
from .config import ConfigError, like, setting
from .engine.config import EngineConfig
from .engine.db.users import UserStore
from .engine.http.passwords import hash_password
from .engine.service import EngineService
from .host.service import HostConfig, HostService
from .netaddr import is_loopback
from .runner import start_all

log = logging.getLogger(__name__)

ADMIN = "admin@internal"


@dataclass(frozen=True, slots=True)
class DevConfig:
    """Dev mode's settings: where it repeats the engine's or the agent's, their declarations."""

    hosts: int = setting(1, "simulated hosts")
    vms: int = setting(2, "VMs per host")
    http_host: str = like(EngineConfig, "http_host")
    http_port: int = like(EngineConfig, "http_port")
    state_dir: Path = like(
        EngineConfig,
        "state_dir",
        help="everything dev mode keeps: PostgreSQL in STATE_DIR/engine/pg, hosts in"
        " STATE_DIR/hostN",
    )
    dsn: str | None = like(
        EngineConfig,
        "dsn",
        help="use this PostgreSQL instead of the embedded one",
        unset="embedded",
    )
    name_delay: float = like(
        AgentConfig, "name_delay", 0.05, help="seconds a simulated guest takes to name a disk"
    )
    refresh_interval: float = like(EngineConfig, "refresh_interval")
    heartbeat_interval: float = like(AgentConfig, "heartbeat_interval", flag=False)
    events: bool = like(
        EngineConfig, "events", help="the engine ignores notifications and polls only"
    )
    rpc_port: int | None = setting(
        None,
        "the first host's JSON-RPC port, one more per host; 0: any free ports, for a new state dir",
        metavar="PORT",
        unset="the HTTP port + 1",
    )


class DevCluster:
    """The composition; after ``ready`` the REST API is at ``self.base_url``."""

    def __init__(self, config: DevConfig, out: TextIO | None = None) -> None:
        self.config = config
        self.state_dir = config.state_dir.resolve()
        self._out = out
        # admin@internal gets a new random password at every start, printed once.
        self.admin_password = secrets.token_urlsafe(12)
        self._seed_token = ""
        self.engine = EngineService(
            EngineConfig(
                dsn=config.dsn,
                http_host=config.http_host,
                http_port=config.http_port,
                state_dir=self.state_dir / "engine",
                refresh_interval=config.refresh_interval,
                events=config.events,
                # Zero setup on loopback; anywhere else everybody signs in.
                anonymous_admin=is_loopback(config.http_host),
            ),
            users_setup=self._admin,
        )
        self.hosts = [self._host(i) for i in range(config.hosts)]

    def _rpc_port(self, index: int) -> int:
        # Stable ports, so a restarted dev cluster finds its hosts where the
        # database remembers them; port 0 (tests) = any.
        first = self.config.rpc_port
        if first is None:
            first = self.config.http_port + 1 if self.config.http_port else 0
        return first + index if first else 0

    def _host(self, index: int) -> HostService:
        host_dir = self.state_dir / f"host{index}"
        cfg = HostConfig(
            listen_host="127.0.0.1",
            listen_port=self._rpc_port(index),
            state_dir=host_dir,
            channels_dir=host_dir / "ch",
            channel_mode="listen",
            hypervisor="sim",
            # The id the engine registers it under, so host and engine logs agree.
            host_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"diskname-dev:{host_dir}")),
        )
        return HostService(cfg, guest_launcher=self._run_guest)

    async def _run_guest(self, vm_id: str, channel: Path, hw: Path) -> None:
        """A simulated guest: the real agent code on the ``sim`` source."""
        agent = AgentService(
            AgentConfig(
                connect=f"unix:{channel}",
                source="sim",
                sim_hw=f"unix:{hw}",
                name_delay=self.config.name_delay,
                heartbeat_interval=self.config.heartbeat_interval,
            )
        )
        await agent.run()

    async def _admin(self, users: UserStore) -> None:
        """Create (or reset) admin@internal, and a short-lived token to seed with."""
        encoded = await asyncio.to_thread(hash_password, self.admin_password)
        await users.put(ADMIN, "admin", encoded)
        self._seed_token = await users.issue_token(ADMIN, 300.0)

    @property
    def base_url(self) -> str:
        return f"http://{self.config.http_host}:{self.engine.http_port}"

    async def run(self, ready: asyncio.Event | None = None) -> None:
        # Every fixed port first: a busy one is one line, before anything started.
        ensure_free("the REST API", self.config.http_host, self.config.http_port, "http_port")
        for index in range(self.config.hosts):
            ensure_free(f"host{index}'s JSON-RPC", "127.0.0.1", self._rpc_port(index), "rpc_port")
        try:
            async with asyncio.TaskGroup() as tg:
                await start_all(tg, self.hosts)
                await start_all(tg, [self.engine])
                await self._seed()
                log.info("dev mode ready: %s (web page and REST API)", self.base_url)
                self._announce()
                if ready is not None:
                    ready.set()
        except* BindError as group:
            # A host's port is set by dev's own --rpc-port, not the host's --listen.
            raise _as_dev_setting(group.exceptions[0]) from None

    def _announce(self) -> None:
        # Standard output, not the log: logs go to files and journals, and the
        # password is printed once, never logged.
        out = self._out or sys.stdout
        print(banner(self.base_url, (ADMIN, self.admin_password)), file=out, flush=True)

    async def _seed(self) -> None:
        """Register the hosts and create V VMs on each, once per state dir."""
        auth = {"Authorization": f"Bearer {self._seed_token}"}
        async with aiohttp.ClientSession(base_url=self.base_url, headers=auth) as http:
            known = {h["name"]: h for h in (await _get(http, "/api/hosts"))["host"]}
            for index, host in enumerate(self.hosts):
                name = f"host{index}"
                if name in known:
                    _check_port(known[name], host.port, index)
                    continue
                body = {"id": host.host_id, "name": name, "address": "127.0.0.1", "port": host.port}
                created = await _post(http, "/api/hosts", body)
                for n in range(self.config.vms):
                    vm = {"name": f"{name}-vm{n}", "host": {"id": created["id"]}}
                    await _post(http, "/api/vms", vm)
                log.info("seeded %s with %d VMs", name, self.config.vms)
            logout = "/ovirt-engine/services/sso-logout"
            async with http.post(logout, data={"token": self._seed_token}) as resp:
                resp.raise_for_status()


def _as_dev_setting(exc: BaseException) -> BaseException:
    if isinstance(exc, BindError) and exc.setting == "listen_port":
        return BindError(exc.what, exc.host, exc.port, "rpc_port", str(exc).rsplit(": ", 1)[-1])
    return exc


def _check_port(known: dict[str, Any], port: int, index: int) -> None:
    if known["port"] != port:
        raise ConfigError(
            f"the state dir has {known['name']} on port {known['port']}, but it now listens on"
            f" {port}: start with --rpc-port {known['port'] - index} or use a new --state-dir"
        )


def _client_command() -> str:
    """How this installation runs the client: ``diskname`` if it is on PATH."""
    if shutil.which("diskname"):
        return "diskname"
    return f"{sys.executable} -m diskname"


def banner(base_url: str, admin: tuple[str, str] | None = None) -> str:
    """What dev mode prints once it serves: where it is, and what to try next."""
    url_flag = "" if base_url == "http://127.0.0.1:8080" else f" --url {base_url}"
    client = _client_command()
    lines = [
        "",
        "diskname dev mode is ready",
        f"  web page and REST API  {base_url}/   (OpenAPI: {base_url}/api/openapi.json)",
    ]
    if admin is not None:
        lines.append(
            f"  admin                  sign in as {admin[0]} with password {admin[1]}"
            " (printed once, never logged)"
        )
    lines += [
        f"  try                    {client} vms{url_flag}",
        f"                         {client} plug host0-vm0{url_flag}   (a new disk and its name)",
        f"                         curl -s {base_url}/api/vms",
        "  stop                   Ctrl-C",
        "",
    ]
    return "\n".join(lines)


async def _get(http: aiohttp.ClientSession, path: str) -> Any:
    async with http.get(path) as resp:
        resp.raise_for_status()
        return await resp.json()


async def _post(http: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> Any:
    async with http.post(path, json=body) as resp:
        if resp.status >= 400:
            raise RuntimeError(f"seeding {path} failed: {resp.status} {await resp.text()}")
        return await resp.json()
