"""A real PostgreSQL primary with a synchronous streaming standby (Debian's PostgreSQL).

``initdb`` a primary on a loopback TCP port, ``pg_basebackup -R`` a standby from
it, start both, and wait until the primary reports the standby ``sync``: from
then on no commit is acknowledged before the standby has it. ``kill_primary()``
is ``kill -9`` of the primary's postmaster; ``promote()`` is ``pg_ctl promote``
on the standby (what a failover manager such as Patroni would do). Run as root,
the servers run as the ``postgres`` user (PostgreSQL refuses root).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BIN = Path(os.environ.get("DISKNAME_PG_BIN", "/usr/lib/postgresql/15/bin"))


def available() -> bool:
    return all((BIN / tool).exists() for tool in ("initdb", "pg_ctl", "pg_basebackup"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgPair:
    root: Path
    primary_port: int
    standby_port: int

    @property
    def primary(self) -> Path:
        return self.root / "primary"

    @property
    def standby(self) -> Path:
        return self.root / "standby"

    def dsn(self, database: str = "postgres") -> str:
        """Both servers, the writable one chosen at each connect (libpq's rule)."""
        hosts = f"127.0.0.1:{self.primary_port},127.0.0.1:{self.standby_port}"
        return f"postgresql://postgres@{hosts}/{database}?target_session_attrs=read-write"

    def kill_primary(self) -> None:
        pid = int((self.primary / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)

    def promote(self) -> None:
        _run(BIN / "pg_ctl", "promote", "-w", "-t", "30", "-D", str(self.standby))

    def sql(self, port: int, statement: str) -> str:
        return _run(
            BIN / "psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
            "-d", "postgres", "-Atc", statement,
        ).strip()  # fmt: skip


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _run(*args: object) -> str:
    done = subprocess.run(
        [*_as_postgres(), *map(str, args)], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _conf(data: Path, **settings: object) -> None:
    lines = [f"{name} = {value!r}".replace('"', "'") for name, value in settings.items()]
    with (data / "postgresql.conf").open("a") as conf:
        conf.write("\n".join(lines) + "\n")


def _start(data: Path) -> None:
    _run(
        BIN / "pg_ctl",
        "start",
        "-w",
        "-t",
        "30",
        "-D",
        data,
        "-l",
        data.parent / f"{data.name}.log",
    )


def _stop(data: Path) -> None:
    if (data / "postmaster.pid").exists():
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            _run(BIN / "pg_ctl", "stop", "-m", "immediate", "-w", "-D", data)


@contextlib.contextmanager
def pg_pair() -> Iterator[PgPair]:
    root = Path(tempfile.mkdtemp(prefix="dnpair"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
    pair = PgPair(root, free_port(), free_port())
    try:
        _run(BIN / "initdb", "-D", pair.primary, "-U", "postgres", "--auth=trust", "--no-sync")
        common = {"listen_addresses": "127.0.0.1", "unix_socket_directories": str(root),
                  "fsync": "off", "full_page_writes": "off"}  # fmt: skip
        _conf(pair.primary, port=pair.primary_port, wal_level="replica",
              synchronous_standby_names="*", synchronous_commit="on", **common)  # fmt: skip
        _start(pair.primary)
        _run(BIN / "pg_basebackup", "-h", "127.0.0.1", "-p", pair.primary_port,
             "-U", "postgres", "-D", pair.standby, "-R", "-X", "stream")  # fmt: skip
        # Once promoted it has no standby of its own: it must not wait for one.
        _conf(pair.standby, port=pair.standby_port, synchronous_standby_names="", **common)
        _start(pair.standby)
        deadline = time.monotonic() + 30
        while pair.sql(pair.primary_port, "SELECT sync_state FROM pg_stat_replication") != "sync":
            if time.monotonic() > deadline:
                raise RuntimeError("the standby never became synchronous")
            time.sleep(0.1)  # sync-ok: polling the primary's view with a deadline
        yield pair
    finally:
        _stop(pair.standby)
        _stop(pair.primary)
        shutil.rmtree(root, ignore_errors=True)
