"""Fuzz the REST API of a real dev cluster with schemathesis, inside a network namespace.

Run by ``tests/test_api_fuzz.py`` as ``unshare -n python -m tests.api_fuzz DSN DIR``:
the fuzzer registers hosts at any address it makes up, and the engine tries to
connect to each, so the whole run lives in a namespace of its own where only
loopback exists and every other address is unreachable at once.

Prints schemathesis's summary and, last, one line ``fuzz: N cases, F failures``;
exits with schemathesis's status.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
SEED = os.environ.get("DISKNAME_FUZZ_SEED", "20261201")


def loopback_up() -> None:
    """A new network namespace has ``lo`` down; bring it up (no iproute2 needed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


def start_dev(dsn: str, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    log = open(work / "dev.log", "wb")  # noqa: SIM115 - the child writes it until the end
    cmd = [sys.executable, "-m", "diskname", "dev", "--http", "127.0.0.1:0", "--dsn", dsn]
    cmd += ["--state-dir", str(work / "state"), "--hosts", "2", "--vms", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(rb"dev mode ready: (http://\S+)", (work / "dev.log").read_bytes())
        if found:
            return proc, found.group(1).decode()
        if proc.poll() is not None:
            break
        time.sleep(0.1)  # sync-ok: polling a log file with a deadline
    proc.kill()
    raise SystemExit("dev mode did not start:\n" + (work / "dev.log").read_text()[-3000:])


def get(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=10) as response:
        return json.load(response)


def config(base: str, work: Path) -> Path:
    """Half the generated ids are ones the cluster really has, so the fuzzer gets past 404."""
    vms = [vm["id"] for vm in get(base, "/api/vms")["vm"]]
    disks = [
        a["id"]
        for vm in vms
        for a in get(base, f"/api/vms/{vm}/diskattachments")["disk_attachment"]
    ]
    known = {
        "vm_id": vms,
        "disk_id": disks,
        "host_id": [h["id"] for h in get(base, "/api/hosts")["host"]],
        "cluster_id": [c["id"] for c in get(base, "/api/clusters")["cluster"]],
    }
    lines = []
    for name, values in known.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    lines.append("[parameters]")
    lines += [f'"path.{name}" = {{ dictionary = "{name}", probability = 0.5 }}' for name in known]
    # ?wait=logical_name on a disk nobody names answers at its timeout: keep it short,
    # under --request-timeout (the rule itself is tested in test_engine_wait_units.py).
    lines.append('"query.timeout" = 0.2')
    # Wrong credentials are a 400 (access_denied), as OAuth 2.0 (RFC 6749 §5.2) and the
    # contract say: for the sign-in endpoint a schema-valid form may well be refused.
    lines += [
        "",
        "[[operations]]",
        'include-path = "/ovirt-engine/sso/oauth/token"',
        'checks.positive_data_acceptance.expected-statuses = ["2XX", 400, 429]',
    ]
    # A schema-valid body may name a disk or host that does not exist: that is a
    # 422 (the target was found; what the body refers to was not), not a 404,
    # which the stateful phase would read as the VM just created being gone.
    for path in ("/api/vms", "/api/vms/{vm_id}/diskattachments"):
        lines += [
            "",
            "[[operations]]",
            f'include-path = "{path}"',
            'include-method = "POST"',
            "checks.positive_data_acceptance.expected-statuses ="
            ' ["2XX", "3XX", 401, 403, 404, 409, 422, 429]',
        ]
    path = work / "schemathesis.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def fuzz(base: str, work: Path) -> int:
    cli = Path(sys.executable).parent / "schemathesis"
    cmd = [
        str(cli), "--config-file", str(config(base, work)), "run", f"{base}/api/openapi.json",
        "--url", base, "--checks", "all", "--phases", "examples,coverage,fuzzing,stateful",
        "--exclude-path", "/api/events", "--seed", SEED, "--request-timeout", "30",
    ]  # fmt: skip
    # In the work folder: schemathesis keeps a cache of its own in the current one.
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=work)
    output = done.stdout + done.stderr
    print(output[-6000:])
    cases = re.search(r"(\d+) generated", output)
    failures = re.search(r"(\d+) failures?,", output) or re.search(r"found (\d+) unique", output)
    print(
        f"fuzz: {cases.group(1) if cases else '?'} cases,"
        f" {failures.group(1) if failures else 0} failures"
    )
    return done.returncode


def main() -> int:
    dsn, work = sys.argv[1], Path(sys.argv[2])
    loopback_up()
    proc, base = start_dev(dsn, work)
    try:
        return fuzz(base, work)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if proc.returncode not in (0, None):
            print(
                f"dev mode exited with {proc.returncode}:\n"
                + (work / "dev.log").read_text()[-3000:]
            )


if __name__ == "__main__":
    sys.exit(main())
