"""Logs: text by default, JSON lines on request, ids from context, no secrets."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest

from diskname.logctx import log_context
from diskname.runner import JsonFormatter

pytestmark = pytest.mark.timeout(90)


def record(msg: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("diskname.test", logging.INFO, __file__, 1, msg, (), None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_json_line_carries_the_ids_of_the_current_task() -> None:
    fmt = JsonFormatter()
    with log_context(host_id="h1"), log_context(vm_id="v1"):
        line = orjson.loads(fmt.format(record("channel up")))
    assert line["msg"] == "channel up" and line["level"] == "info"
    assert (line["vm_id"], line["host_id"]) == ("v1", "h1")
    assert "vm_id" not in orjson.loads(fmt.format(record("outside")))


async def test_ids_follow_tasks_created_inside_the_context() -> None:
    fmt = JsonFormatter()

    async def child() -> str:
        return fmt.format(record("from a child task"))

    with log_context(vm_id="v9"):
        task = asyncio.create_task(child())
    assert orjson.loads(await task)["vm_id"] == "v9"


def test_explicit_extra_wins_over_context() -> None:
    with log_context(vm_id="ctx"):
        line = orjson.loads(JsonFormatter().format(record("x", vm_id="explicit")))
    assert line["vm_id"] == "explicit"


def with_password(dsn: str, password: str) -> str:
    parts = urlsplit(dsn)
    user = parts.username or "postgres"
    netloc = f"{user}:{password}@{parts.hostname or ''}"
    return urlunsplit(parts._replace(netloc=netloc))


async def test_engine_json_logs_hold_no_secrets(pg_dsn: str, tmp_path: Path) -> None:
    # The embedded cluster trusts local connections, so any password works.
    dsn = with_password(pg_dsn, "pw-that-must-not-leak")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "diskname",
        "engine",
        "--log-format",
        "json",
        "--dsn",
        dsn,
        "--api-token",
        "token-that-must-not-leak",
        "--http",
        "127.0.0.1:0",
        "--state-dir",
        str(tmp_path),
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    lines: list[bytes] = []
    async with asyncio.timeout(60):
        while not any(b"is ready" in line for line in lines):
            line = await proc.stderr.readline()
            assert line, b"".join(lines).decode()
            lines.append(line)
        proc.send_signal(signal.SIGTERM)
        _, rest = await proc.communicate()
    text = b"".join(lines) + rest
    assert proc.returncode == 0, text.decode()
    parsed = [orjson.loads(line) for line in text.splitlines() if line.strip()]
    assert any(p["msg"].endswith("is ready") for p in parsed)
    assert b"must-not-leak" not in text


async def test_host_json_logs_name_the_vm_of_a_bad_guest(tmp_path: Path) -> None:
    """A guest's garbage is logged by the host with that VM's id (and nothing leaks)."""
    from diskname.host.channels import channel_path
    from diskname.host.service import HostConfig, HostService
    from diskname.runner import setup_logging

    from .conftest import started, wait_until

    root = Path(tempfile.mkdtemp(prefix="dn"))
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, rec: logging.LogRecord) -> None:
            lines.append(JsonFormatter().format(rec))

    setup_logging("DEBUG", "json")
    capture = Capture()
    logging.getLogger().addHandler(capture)
    cfg = HostConfig(
        listen_port=0, state_dir=root / "s", channels_dir=root / "c", channel_mode="listen"
    )
    host = HostService(cfg)
    try:
        async with started(host):
            vm = await host.create_vm(str(uuid.uuid4()), "guest", [])
            path = channel_path(cfg.channels_dir, vm.id)
            await wait_until(path.exists)
            _reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b"this is not json\n")
            await writer.drain()
            await wait_until(lambda: any(vm.id in line for line in lines))
            writer.close()
    finally:
        logging.getLogger().removeHandler(capture)
        setup_logging("WARNING")
        shutil.rmtree(root, ignore_errors=True)
    tagged = [orjson.loads(line) for line in lines if vm.id in line]
    assert all(entry.get("vm_id") == vm.id for entry in tagged), tagged
