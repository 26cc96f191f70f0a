"""Secure by default, as separate processes started by their command lines (issue 12).

Acceptance 1: ``diskname pki init``, ``pki issue`` for 127.0.0.1, a host with
mutual TLS, an engine with ``--pki-dir``, a user from ``diskname user add``, a
token from the SSO endpoint, and a REST hot-plug named by the agent; the host
refuses a plaintext client, a client without a certificate and one whose
certificate another CA signed; an engine with the wrong CA shows the host as
``untrusted``, never ``up``. Acceptance 2: a host on 0.0.0.0 without TLS and an
engine on 0.0.0.0 without users exit with status 2 and one clear line.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from diskname.bench.run import free_port
from diskname.streams import JsonRpcClient, RpcClientError

from .conftest import _with_database, wait_until
from .rest import Rest
from .test_e2e_processes import Procs, check_hotplug_cycle, healthy, listening, processes

pytestmark = pytest.mark.timeout(180)
PASSWORD = "alice-password"


async def cli(*args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    """``python -m diskname ARGS`` to completion: exit status, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "diskname", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def ok(*args: str, stdin: bytes = b"") -> str:
    code, out, err = await cli(*args, stdin=stdin)
    assert code == 0, (args, out, err)
    return out


@pytest.fixture
async def other_dsn(pg_cluster: str) -> AsyncIterator[str]:
    """A second empty database, for an engine that must not share the first one's hosts."""
    admin = await asyncpg.connect(pg_cluster)
    name = f"other_{os.getpid()}_{id(admin)}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield _with_database(pg_cluster, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def start_engine(procs: Procs, name: str, dsn: str, pki: Path, tmp: Path) -> str:
    port = free_port()
    await procs.start(
        name, "engine", "--dsn", dsn, "--http", f"127.0.0.1:{port}",
        "--pki-dir", str(pki), "--state-dir", str(tmp / name), "--refresh-interval", "1",
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    await healthy(base)
    return base


async def sign_in(http: aiohttp.ClientSession, user: str, password: str) -> str:
    form = {"grant_type": "password", "scope": "ovirt-app-api"}
    data = {**form, "username": user, "password": password}
    async with http.post("/ovirt-engine/sso/oauth/token", data=data) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        assert body["token_type"] == "bearer" and body["expires_in"] == 3600
        return str(body["access_token"])


def client_tls(ca: Path, cert_dir: Path | None) -> ssl.SSLContext:
    """A client that trusts ``ca`` and presents ``cert_dir``'s engine certificate, if any."""
    context = ssl.create_default_context(cafile=ca)
    if cert_dir is not None:
        context.load_cert_chain(cert_dir / "engine.pem", cert_dir / "engine.key")
    return context


async def refused(port: int, context: ssl.SSLContext | None) -> bool:
    """Whether the host refuses this client (TLS 1.3 shows it at the first read)."""
    try:
        client = await JsonRpcClient.connect(
            "127.0.0.1", port, ssl_context=context, server_hostname="127.0.0.1"
        )
    except (ssl.SSLError, RpcClientError, ConnectionError):
        return True
    try:
        await client.call("Host.ping", timeout=5)
    except (ssl.SSLError, RpcClientError, ConnectionError):
        return True
    finally:
        await client.close()
    return False


async def host_status(rest: Rest, host_id: str) -> dict[str, Any]:
    host: dict[str, Any] = await rest.ok("GET", f"/api/hosts/{host_id}")
    return host


async def test_mutual_tls_users_and_tokens_as_separate_processes(
    pg_dsn: str, other_dsn: str
) -> None:
    async with processes() as (procs, tmp):
        pki, host_pki, rogue = tmp / "pki", tmp / "host-pki", tmp / "rogue"
        await ok("pki", "init", "--dir", str(pki), "--name", "engine", "--address", "127.0.0.1")
        await ok("pki", "issue", "--dir", str(pki), "--host", "127.0.0.1", "--out", str(host_pki))
        await ok("pki", "init", "--dir", str(rogue), "--name", "rogue")
        await ok(
            "user", "add", "alice", "--role", "admin", "--password-stdin", "--dsn", pg_dsn,
            stdin=PASSWORD.encode() + b"\n",
        )  # fmt: skip
        assert "alice  admin" in await ok("user", "list", "--dsn", pg_dsn)

        rpc_port, channels = free_port(), tmp / "ch"
        await procs.start(
            "host", "host", "--listen", f"127.0.0.1:{rpc_port}", "--channel-mode", "listen",
            "--channels-dir", str(channels), "--state-dir", str(tmp / "host"),
            "--tls-cert", str(host_pki / "host.pem"), "--tls-key", str(host_pki / "host.key"),
            "--tls-ca", str(host_pki / "ca.pem"),
        )  # fmt: skip
        await listening(rpc_port)
        base = await start_engine(procs, "engine", pg_dsn, pki, tmp)

        async with aiohttp.ClientSession(base_url=base) as anonymous:
            async with anonymous.get("/api/vms") as resp:
                assert resp.status == 401
            token = await sign_in(anonymous, "alice", PASSWORD)
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(base_url=base, headers=headers) as http:
            rest = Rest(http)
            body = {"name": "h1", "address": "127.0.0.1", "port": rpc_port}
            host = await rest.ok("POST", "/api/hosts", body, status=201)
            await wait_until(lambda: _status_is(rest, host["id"], "up"), timeout=20, interval=0.1)
            new_vm = {"name": "vm1", "host": {"id": host["id"]}}
            vm = (await rest.ok("POST", "/api/vms", new_vm, status=201))["id"]
            await procs.start(
                "agent", "agent", "--source", "sim", "--name-delay", "0.05",
                "--connect", f"unix:{channels}/{vm}.ovirt-guest-agent.0",
                "--sim-hw", f"unix:{channels}/{vm}.sim-hw",
            )  # fmt: skip
            root = (await rest.ok("GET", f"/api/vms/{vm}/diskattachments"))["disk_attachment"][0]
            assert (await rest.wait_name(vm, root["id"], timeout=20))[0] == "/dev/vda"
            await check_hotplug_cycle(rest, vm)

        # The host lets in only a client with a certificate its CA signed.
        ca = host_pki / "ca.pem"
        assert await refused(rpc_port, None), "a plaintext client got in"
        assert await refused(rpc_port, client_tls(ca, None)), "a client without a certificate"
        assert await refused(rpc_port, client_tls(ca, rogue)), "a certificate of another CA"
        assert not await refused(rpc_port, client_tls(ca, pki))  # the engine's own does

        # An engine whose CA did not sign the host's certificate does not trust it.
        wrong = await start_engine(procs, "engine-wrong-ca", other_dsn, rogue, tmp)
        async with aiohttp.ClientSession(base_url=wrong) as http:
            rest = Rest(http)  # loopback, no users: this engine is open
            body = {"name": "h1", "address": "127.0.0.1", "port": rpc_port}
            host = await rest.ok("POST", "/api/hosts", body, status=201)
            seen: list[str] = []

            async def untrusted() -> bool:
                status = await host_status(rest, host["id"])
                seen.append(status["status"])
                return status["status"] == "untrusted"

            await wait_until(untrusted, timeout=20, interval=0.1)
            reason = (await host_status(rest, host["id"]))["status_reason"]
            assert "certificate" in reason, reason
            assert "up" not in seen


async def _status_is(rest: Rest, host_id: str, status: str) -> bool:
    return (await host_status(rest, host_id))["status"] == status


async def test_a_host_off_loopback_without_tls_exits_2_with_one_line(tmp_path: Path) -> None:
    code, out, err = await cli(
        "host", "--listen", "0.0.0.0:0", "--state-dir", str(tmp_path / "s"),
        "--channels-dir", str(tmp_path / "c"),
    )  # fmt: skip
    assert code == 2, (out, err)
    assert err.startswith("diskname: refusing to serve JSON-RPC on 0.0.0.0:0 without TLS")
    assert err.count("\n") == 1 and "--insecure-plaintext" in err


async def test_an_engine_off_loopback_without_users_exits_2_with_one_line(pg_dsn: str) -> None:
    code, out, err = await cli("engine", "--http", "0.0.0.0:0", "--dsn", pg_dsn)
    assert code == 2, (out, err)
    lines = err.splitlines()
    assert "Traceback" not in err
    own = [line for line in lines if line.startswith("diskname:")]  # the rest is INFO logging
    assert own == [lines[-1]]
    assert own[0].startswith("diskname: refusing to serve the REST API on 0.0.0.0:0 with no user")
    assert "diskname user add" in own[0] and "--insecure-no-auth" in own[0]
