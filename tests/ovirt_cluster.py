"""A real cluster for oVirt's own (synchronous) SDK: engine, host and agents as processes.

``diskname pki init`` makes the engine CA, the engine serves HTTPS with its
certificate, ``diskname user add`` creates the user the SDK signs in as; a host
with simulated guests runs beside it and each VM gets a real agent process, as
tests/test_e2e_processes.py runs them. Everything here is synchronous, like the
SDK: processes are started with ``subprocess`` and waited for with deadlines.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
USER, PASSWORD = "admin@internal", "sdk-test-password"


def poll(probe: Callable[[], T], timeout: float = 20.0, interval: float = 0.05) -> T:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)  # sync-ok: polling with a deadline


@dataclass
class Cluster:
    root: Path
    base: str  # https://127.0.0.1:PORT
    ca_file: Path
    host_id: str = ""
    vms: dict[str, str] = field(default_factory=dict)  # name -> id
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """What an SDK connection's ``url`` is."""
        return self.base + "/ovirt-engine/api"

    def rest(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        """The JSON API (set-up and checks), as the admin over HTTPS; (status, body)."""
        auth = (
            f"Bearer {token}"
            if token
            else "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        )
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": auth},
        )
        context = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            with urllib.request.urlopen(request, context=context, timeout=30) as resp:
                data = resp.read()
                return resp.status, json.loads(data) if data else None
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        got, data = self.rest(method, path, body)
        assert got == status, (method, path, got, data)
        return data

    def attachment(self, vm: str, disk_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self.ok("GET", f"/api/vms/{self.vms[vm]}/diskattachments/{disk_id}")
        return data

    def named(self, vm: str, disk_id: str, timeout: float = 20.0) -> str:
        return str(poll(lambda: self.attachment(vm, disk_id)["logical_name"], timeout))

    def add_vm(self, name: str, host_id: str) -> str:
        vm_id: str = self.ok("POST", "/api/vms", {"name": name, "host": {"id": host_id}}, 201)["id"]
        self.vms[name] = vm_id
        channels = self.root / "ch"
        self.start(
            f"agent-{name}", "agent", "--source", "sim", "--name-delay", "0.05",
            "--connect", f"unix:{channels}/{vm_id}.ovirt-guest-agent.0",
            "--sim-hw", f"unix:{channels}/{vm_id}.sim-hw",
        )  # fmt: skip
        return vm_id

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(
            [sys.executable, "-m", "diskname", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        self.procs.append((name, proc))
        return proc

    def printed(self, name: str, pattern: str, timeout: float = 60.0) -> str:
        """The first group of ``pattern`` once process ``name``'s output shows it."""
        log, proc = self.root / f"{name}.log", dict(self.procs)[name]

        def found() -> str | None:
            match = re.search(pattern, log.read_text(errors="replace"))
            if match is None and proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.dump()}")
            return match.group(1) if match else None

        return poll(found, timeout, 0.05)

    def dump(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.root.glob("*.log"))

    def stop(self) -> dict[str, int]:
        codes = {}
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            codes[name] = proc.returncode
        return codes


def _cli(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "diskname", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


@contextmanager
def running_cluster(dsn: str) -> Iterator[Cluster]:
    """Engine (HTTPS, a user), one host, VMs added with :meth:`Cluster.add_vm`."""
    root = Path(tempfile.mkdtemp(prefix="dnsdk"))  # short: the agent channels are UNIX sockets
    pki = root / "pki"
    _cli("pki", "init", "--dir", str(pki), "--name", "localhost", "--address", "127.0.0.1")
    _cli("user", "add", USER, "--role", "admin", "--password-stdin", "--dsn", dsn,
         stdin=PASSWORD + "\n")  # fmt: skip
    cluster = Cluster(root, "", pki / "ca.pem")
    try:
        cluster.start(
            "engine", "engine", "--dsn", dsn, "--http", "127.0.0.1:0",
            "--https-cert", str(pki / "engine.pem"), "--https-key", str(pki / "engine.key"),
            "--refresh-interval", "0.5", "--state-dir", str(root / "engine"),
        )  # fmt: skip
        cluster.start(
            "host", "host", "--listen", "127.0.0.1:0", "--channel-mode", "listen",
            "--channels-dir", str(root / "ch"), "--state-dir", str(root / "host"), "--no-qemu-ga",
        )  # fmt: skip
        cluster.base = cluster.printed("engine", r"engine serving on (https://\S+)")
        port = int(cluster.printed("host", r"serving JSON-RPC on port (\d+)"))
        host = cluster.ok("POST", "/api/hosts", {"name": "h1", "address": "127.0.0.1",
                                                 "port": port}, 201)  # fmt: skip
        poll(lambda: cluster.ok("GET", f"/api/hosts/{host['id']}")["status"] == "up")
        cluster.host_id = host["id"]
        yield cluster
    except BaseException:
        print(cluster.dump())
        raise
    finally:
        codes = cluster.stop()
        if all(code == 0 for code in codes.values()):
            shutil.rmtree(root, ignore_errors=True)
    assert all(code == 0 for code in codes.values()), (codes, cluster.dump())
