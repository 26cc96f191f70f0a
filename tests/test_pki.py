"""``diskname pki init|issue``: files, modes, names, and real TLS handshakes with them.

Each certificate is tried the way it will be used: a TLS server with a host's
certificate, a client that trusts only ``ca.pem`` and checks the address, and
the engine's certificate as the client certificate a host requires.
"""

from __future__ import annotations

import asyncio
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509

from diskname.__main__ import main
from diskname.pki import PkiError, init, issue, subject_alt_names


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(path: Path) -> list[str]:
    ext = cert(path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(name.value) for name in ext]


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    init(tmp_path / "pki", "engine.lab", ["127.0.0.1"])
    return tmp_path / "pki"


def test_init_writes_the_ca_and_the_engine_certificate(ca: Path) -> None:
    assert sorted(p.name for p in ca.iterdir()) == ["ca.key", "ca.pem", "engine.key", "engine.pem"]
    assert mode(ca) == 0o700
    assert mode(ca / "ca.key") == mode(ca / "engine.key") == 0o600
    assert mode(ca / "ca.pem") == mode(ca / "engine.pem") == 0o644
    root = cert(ca / "ca.pem")
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert sans(ca / "engine.pem") == ["engine.lab", "127.0.0.1"]
    usage = cert(ca / "engine.pem").extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert {u._name for u in usage.value} == {"serverAuth", "clientAuth"}


def test_init_refuses_to_overwrite_a_ca(ca: Path) -> None:
    before = (ca / "ca.key").read_bytes()
    with pytest.raises(PkiError, match="refusing to overwrite the engine CA"):
        init(ca, "engine.lab")
    assert (ca / "ca.key").read_bytes() == before


def test_issue_writes_the_three_files_with_a_san_per_name(ca: Path, tmp_path: Path) -> None:
    out = tmp_path / "hv01"
    issue(ca, "hv01.lab", ["10.1.2.3", "hv01", "fd00::5", "10.1.2.3"], out)
    assert sorted(p.name for p in out.iterdir()) == ["ca.pem", "host.key", "host.pem"]
    assert mode(out / "host.key") == 0o600
    assert (out / "ca.pem").read_bytes() == (ca / "ca.pem").read_bytes()
    assert sans(out / "host.pem") == ["hv01.lab", "10.1.2.3", "hv01", "fd00::5"]
    ip = cert(out / "host.pem").extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert len(ip.value.get_values_for_type(x509.IPAddress)) == 2
    # Re-issuing (a renewal) replaces the files.
    first = (out / "host.key").read_bytes()
    issue(ca, "hv01.lab", [], out)
    assert (out / "host.key").read_bytes() != first and sans(out / "host.pem") == ["hv01.lab"]


@pytest.mark.parametrize("name", ["", "bad name", "a..b", "-x.lab", "x" * 254, "under_score"])
def test_names_that_are_neither_an_address_nor_a_dns_name_are_refused(name: str) -> None:
    with pytest.raises(PkiError, match="neither an IP address nor a DNS name"):
        subject_alt_names([name])


def test_issue_without_a_ca_says_to_run_init(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="run `diskname pki init"):
        issue(tmp_path, "h", [], tmp_path / "out")


def test_issue_refuses_a_key_that_is_not_the_cas(ca: Path, tmp_path: Path) -> None:
    init(tmp_path / "other", "x")
    (ca / "ca.key").write_bytes((tmp_path / "other" / "ca.key").read_bytes())
    with pytest.raises(PkiError, match="is not the key of"):
        issue(ca, "h", [], tmp_path / "out")


def test_the_command_line_exits_2_with_one_line(
    ca: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pki", "init", "--dir", str(ca), "--name", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing to overwrite" in err
    out = tmp_path / "h"
    args = ["pki", "issue", "--dir", str(ca), "--host", "127.0.0.1", "--out", str(out)]
    assert main(args) == 0
    assert (out / "host.pem").is_file()


# -- the certificates in real TLS handshakes ---------------------------------------


async def handshake(server_cert: Path, server_key: Path, ca: Path, client: Path | None) -> str:
    """A TLS server requiring a client certificate from ``ca``; returns what the
    client saw: "ok", or the verification error."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(server_cert, server_key)
    server.load_verify_locations(ca / "ca.pem")
    server.verify_mode = ssl.CERT_REQUIRED

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")
        writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server)
    port = listener.sockets[0].getsockname()[1]
    context = ssl.create_default_context(cafile=ca / "ca.pem")
    if client is not None:
        context.load_cert_chain(client / "engine.pem", client / "engine.key")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        return "ok" if line == b"hello\n" else "refused"
    except ssl.SSLCertVerificationError as exc:
        return str(exc.verify_message)
    except (ssl.SSLError, ConnectionError):
        return "refused"
    finally:
        listener.close()


async def test_the_engine_trusts_a_host_certificate_for_its_address(
    ca: Path, tmp_path: Path
) -> None:
    out = tmp_path / "h"
    issue(ca, "127.0.0.1", [], out)
    assert await handshake(out / "host.pem", out / "host.key", ca, ca) == "ok"


async def test_a_host_certificate_for_another_address_is_not_trusted(
    ca: Path, tmp_path: Path
) -> None:
    out = tmp_path / "h"
    issue(ca, "hv02.lab", ["10.9.9.9"], out)
    seen = await handshake(out / "host.pem", out / "host.key", ca, ca)
    assert "mismatch" in seen


async def test_a_host_refuses_clients_without_the_engine_certificate(
    ca: Path, tmp_path: Path
) -> None:
    out = tmp_path / "h"
    issue(ca, "127.0.0.1", [], out)
    init(tmp_path / "rogue", "rogue")
    assert await handshake(out / "host.pem", out / "host.key", ca, None) == "refused"
    assert await handshake(out / "host.pem", out / "host.key", ca, tmp_path / "rogue") == "refused"


async def test_a_host_key_cannot_pose_as_the_engine_to_another_host(
    ca: Path, tmp_path: Path
) -> None:
    """Host certificates are for TLS servers only (extended key usage)."""
    victim, thief = tmp_path / "victim", tmp_path / "thief"
    issue(ca, "127.0.0.1", [], victim)
    issue(ca, "hv09.lab", [], thief)
    (thief / "engine.pem").write_bytes((thief / "host.pem").read_bytes())
    (thief / "engine.key").write_bytes((thief / "host.key").read_bytes())
    assert await handshake(victim / "host.pem", victim / "host.key", ca, thief) == "refused"
