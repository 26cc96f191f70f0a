"""Certificates for TLS tests, made with the ``openssl`` command at test time.

A CA, a host certificate for 127.0.0.1, an engine (client) certificate the CA
signed, and a rogue CA with an ``intruder`` certificate it signed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

OPENSSL = shutil.which("openssl")


def openssl(*args: str, cwd: Path) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def issue(d: Path, name: str, ca: str, extensions: str) -> None:
    """Create ``name.key`` and ``name.crt`` signed by ``ca``."""
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
            cwd=d)  # fmt: skip
    (d / f"{name}.ext").write_text(extensions)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext",
            cwd=d)  # fmt: skip


def make_ca(d: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
            "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign", cwd=d)  # fmt: skip


@pytest.fixture(scope="module")
def pki() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="dnpki"))
    try:
        make_ca(d, "ca")
        make_ca(d, "rogue-ca")
        issue(d, "host", "ca", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        issue(d, "engine", "ca", "extendedKeyUsage=clientAuth\n")
        issue(d, "intruder", "rogue-ca", "extendedKeyUsage=clientAuth\n")
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
