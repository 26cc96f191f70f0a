"""The client on a secured engine (SPEC §18): ``--ca-file``, ``login``/``logout`` with a
kept token, ``http://`` aimed at the HTTPS port, and exit status 3 of ``wait`` and
``plug`` — engine, host and agent as real processes (tests/ovirt_cluster.py).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from diskname.client.session import Tokens

from .ovirt_cluster import PASSWORD, USER, Cluster, running_cluster

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def secured(pg_cluster: str) -> Iterator[Cluster]:
    import asyncio

    import asyncpg

    from .conftest import _with_database  # a database of this module's own

    name = f"secured_{os.getpid()}"

    async def create(sql: str) -> None:
        conn = await asyncpg.connect(pg_cluster)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(create(f'CREATE DATABASE "{name}"'))
    try:
        with running_cluster(_with_database(pg_cluster, name)) as cluster:
            yield cluster
    finally:
        asyncio.run(create(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def diskname(
    *args: str, config_home: Path, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "XDG_CONFIG_HOME": str(config_home), **(env or {})}
    environment.pop("DISKNAME_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "diskname", *args],
        input=stdin, capture_output=True, text=True, timeout=120, cwd=ROOT, env=environment,
    )  # fmt: skip


def test_login_then_commands_with_the_kept_token(secured: Cluster, tmp_path: Path) -> None:
    ca, url = str(secured.ca_file), secured.base
    # Without a sign-in: refused, one line, exit 1.
    done = diskname("vms", "--url", url, "--ca-file", ca, config_home=tmp_path)
    assert done.returncode == 1 and "401" in done.stderr, done
    # Without the CA: the certificate is not trusted.
    done = diskname("vms", "--url", url, config_home=tmp_path)
    assert done.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in done.stderr, done

    bad = diskname(
        "--ca-file", ca, "login", USER, "--url", url, stdin="wrong\n", config_home=tmp_path
    )
    assert bad.returncode == 1 and "diskname login:" in bad.stderr, bad
    done = diskname("login", USER, "--url", url, "--ca-file", ca, stdin=PASSWORD + "\n",
                    config_home=tmp_path)  # fmt: skip
    assert done.returncode == 0 and "signed in" in done.stdout, done
    kept = tmp_path / "diskname" / "tokens.json"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE(kept.parent.stat().st_mode) == 0o700
    assert PASSWORD not in kept.read_text()

    # DISKNAME_CA_FILE works as --ca-file does.
    done = diskname("vms", "--url", url, config_home=tmp_path, env={"DISKNAME_CA_FILE": ca})
    assert done.returncode == 0 and done.stdout.startswith("VM"), done

    # An expired token: a clear message, not a bare 401.
    entries = json.loads(kept.read_text())
    entries[url]["expires_at"] = 1.0
    kept.write_text(json.dumps(entries))
    done = diskname("vms", "--url", url, "--ca-file", ca, config_home=tmp_path)
    assert done.returncode == 1 and "expired" in done.stderr and "diskname login" in done.stderr

    # logout revokes it on the engine, and forgets it here.
    diskname("login", USER, "--url", url, "--ca-file", ca, stdin=PASSWORD, config_home=tmp_path)
    token = Tokens(tmp_path / "diskname").token_for(url)
    done = diskname("logout", "--url", url, "--ca-file", ca, config_home=tmp_path)
    assert done.returncode == 0 and "signed out" in done.stdout, done
    assert Tokens(tmp_path / "diskname").token_for(url) is None
    status, _ = secured.rest("GET", "/api/vms", token=token)
    assert status == 401


def test_http_aimed_at_the_https_port_says_so(secured: Cluster, tmp_path: Path) -> None:
    plain = secured.base.replace("https://", "http://")
    done = diskname("vms", "--url", plain, config_home=tmp_path)
    assert done.returncode == 1, done
    assert "this is an HTTPS port" in done.stderr and secured.base in done.stderr, done.stderr


def test_wait_and_plug_exit_3_when_the_guest_names_nothing(
    secured: Cluster, tmp_path: Path
) -> None:
    ca, url = str(secured.ca_file), secured.base
    diskname("login", USER, "--url", url, "--ca-file", ca, stdin=PASSWORD, config_home=tmp_path)
    common = ("--url", url, "--ca-file", ca)
    # A VM with an agent: plug names it; wait prints the name at once.
    secured.add_vm("named", secured.host_id)
    done = diskname("plug", "named", "--wait", "20", "--json", *common, config_home=tmp_path)
    assert done.returncode == 0, done
    att = json.loads(done.stdout)
    assert att["logical_name"].startswith("/dev/")
    done = diskname("wait", "named", att["id"], *common, config_home=tmp_path)
    assert (done.returncode, done.stdout.strip()) == (0, att["logical_name"]), done

    # A VM without an agent: nothing names the disk.
    body = {"name": "silent", "host": {"id": secured.host_id}}
    secured.vms["silent"] = secured.ok("POST", "/api/vms", body, 201)["id"]
    done = diskname("plug", "silent", "--wait", "1", *common, config_home=tmp_path)
    assert done.returncode == 3 and "not named it within 1 s" in done.stderr, done
    disk = [a for a in secured.ok("GET", f"/api/vms/{secured.vms['silent']}/diskattachments")[
        "disk_attachment"] if a["active"] and not a["logical_name"]][-1]["id"]  # fmt: skip
    done = diskname("wait", "silent", disk, "--timeout", "0.5", *common, config_home=tmp_path)
    assert done.returncode == 3 and not done.stdout and "within 0.5 s" in done.stderr, done
