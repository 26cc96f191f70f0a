"""Dev mode stays zero-setup on loopback, and its admin@internal password is printed once,
on standard output, never through logging."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from diskname.dev import ADMIN, DevCluster, DevConfig
from diskname.engine.db.users import UserStore

from .conftest import started


async def test_dev_mode_prints_a_working_admin_password_once_and_never_logs_it(
    pg_dsn: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with tempfile.TemporaryDirectory(prefix="dnd") as state:
        config = DevConfig(hosts=1, vms=1, http_port=0, state_dir=Path(state), dsn=pg_dsn)
        cluster = DevCluster(config)
        async with started(cluster), aiohttp.ClientSession(base_url=cluster.base_url) as http:
            password = cluster.admin_password
            assert len(password) >= 16
            async with http.get("/api/me") as resp:  # no credentials: admin, on loopback
                assert (await resp.json())["auth"] == "anonymous"
            async with http.get("/api/vms", headers={"Host": "dev.example"}) as resp:
                assert resp.status == 401  # not for a page whose name points here
            form = {"grant_type": "password", "username": ADMIN, "password": password}
            async with http.post("/ovirt-engine/sso/oauth/token", data=form) as resp:
                token = (await resp.json())["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            async with http.get("/api/me", headers=headers) as resp:
                assert await resp.json() == {"name": ADMIN, "role": "admin", "auth": "token"}
            # The token dev mode seeded with was revoked: only admin@internal's new one lives.
            conn = await asyncpg.connect(pg_dsn)
            try:
                assert await UserStore(conn).tokens() == {ADMIN: 1}
            finally:
                await conn.close()
    out = capsys.readouterr().out
    assert out.count(password) == 1 and f"sign in as {ADMIN}" in out
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert password not in logged and "dev mode ready" in logged
