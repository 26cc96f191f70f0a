"""The engine's PKI (SPEC §11): an engine CA, the engine's certificate, one per host.

As oVirt's engine runs its own CA and enrolls every host, ``diskname pki init``
makes a CA and the engine's certificate (TLS client towards the hosts, TLS
server for HTTPS), and ``diskname pki issue`` a certificate for one hypervisor
host whose subject alternative names are the host's name and addresses, which
the engine verifies against the address it registered the host with.

Keys are ECDSA P-256 (fast handshakes, accepted by every TLS stack the tiers
and oVirt's SDK use), written unencrypted with mode 0600: services load them
unattended. A host certificate is good for TLS *server* use only, so a stolen
host key cannot be presented to another host as the engine.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
CERT_DAYS = 825
KEY_MODE = 0o600
CERT_MODE = 0o644
DIR_MODE = 0o700

CA_CERT, CA_KEY = "ca.pem", "ca.key"
ENGINE_CERT, ENGINE_KEY = "engine.pem", "engine.key"
HOST_CERT, HOST_KEY = "host.pem", "host.key"

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")

Key = ec.EllipticCurvePrivateKey
GeneralName = x509.DNSName | x509.IPAddress


class PkiError(Exception):
    """A PKI command cannot be done; ``str(exc)`` is one line for the user."""


# -- the commands ----------------------------------------------------------------


def init(directory: Path, name: str, addresses: Sequence[str] = (), days: int = CA_DAYS) -> None:
    """Create the engine CA and the engine's certificate in ``directory``.

    Refuses to overwrite anything: every host certificate depends on the CA.
    """
    sans = subject_alt_names([name, *addresses])
    existing = [f for f in (CA_CERT, CA_KEY, ENGINE_CERT, ENGINE_KEY) if (directory / f).exists()]
    if existing:
        raise PkiError(
            f"{directory / existing[0]} exists: refusing to overwrite the engine CA "
            "(every host certificate depends on it)"
        )
    _make_dir(directory)
    ca_key, engine_key = _new_key(), _new_key()
    ca = _ca_certificate(ca_key, days)
    engine = _leaf(ca, ca_key, engine_key, name, sans, min(days, CERT_DAYS), client=True)
    _write(directory / CA_KEY, _key_pem(ca_key), KEY_MODE, exclusive=True)
    _write(directory / CA_CERT, _cert_pem(ca), CERT_MODE, exclusive=True)
    _write(directory / ENGINE_KEY, _key_pem(engine_key), KEY_MODE, exclusive=True)
    _write(directory / ENGINE_CERT, _cert_pem(engine), CERT_MODE, exclusive=True)


def issue(
    directory: Path, host: str, addresses: Sequence[str], out: Path, days: int = CERT_DAYS
) -> None:
    """Write ``out/host.pem``, ``out/host.key`` and a copy of ``ca.pem`` for one host.

    Re-issuing (a renewal, a new address) replaces the host's files.
    """
    sans = subject_alt_names([host, *addresses])
    ca, ca_key = load_ca(directory)
    key = _new_key()
    cert = _leaf(ca, ca_key, key, host, sans, days, client=False)
    _make_dir(out)
    _write(out / HOST_KEY, _key_pem(key), KEY_MODE)
    _write(out / HOST_CERT, _cert_pem(cert), CERT_MODE)
    _write(out / CA_CERT, _cert_pem(ca), CERT_MODE)


def load_ca(directory: Path) -> tuple[x509.Certificate, Key]:
    """The CA certificate and key of ``directory``, or a :class:`PkiError` saying why not."""
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if not cert_path.exists() or not key_path.exists():
        raise PkiError(f"no engine CA in {directory}: run `diskname pki init --dir {directory}`")
    cert_data, key_data = _read(cert_path), _read(key_path)
    try:
        cert = x509.load_pem_x509_certificate(cert_data)
    except ValueError:
        raise PkiError(f"{cert_path} is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise PkiError(f"{key_path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Key) or key.public_key() != cert.public_key():
        raise PkiError(f"{key_path} is not the key of {cert_path}")
    return cert, key


# -- names -------------------------------------------------------------------------


def subject_alt_names(names: Iterable[str]) -> list[GeneralName]:
    """One SAN per distinct name: an IP address as an IP SAN, anything else as a DNS name."""
    sans: list[GeneralName] = []
    for name in names:
        san = _san(name)
        if san not in sans:
            sans.append(san)
    return sans


def _san(name: str) -> GeneralName:
    text = name.strip().strip("[]")
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        pass
    if len(text) > 253 or not _DNS_NAME.fullmatch(text):
        raise PkiError(f"{name!r} is neither an IP address nor a DNS name")
    return x509.DNSName(text.rstrip(".").lower())


# -- certificates -------------------------------------------------------------------


def _new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "diskname"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


def _builder(subject: x509.Name, issuer: x509.Name, key: Key, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # An hour back: a host whose clock is a little behind still accepts it.
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _ca_certificate(key: Key, days: int) -> x509.Certificate:
    name = _name("diskname engine CA")
    builder = (
        _builder(name, name, key, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
    )
    return builder.sign(key, hashes.SHA256())


def _leaf(
    ca: x509.Certificate,
    ca_key: Key,
    key: Key,
    common_name: str,
    sans: list[GeneralName],
    days: int,
    *,
    client: bool,
) -> x509.Certificate:
    usages = [ExtendedKeyUsageOID.SERVER_AUTH]
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    builder = (
        _builder(_name(common_name), ca.subject, key, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(authority, critical=False)
    )
    return builder.sign(ca_key, hashes.SHA256())


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


# -- files --------------------------------------------------------------------------


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise PkiError(f"cannot create {directory}: {exc.strerror}") from None
    if not directory.is_dir():
        raise PkiError(f"{directory} is not a directory")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PkiError(f"cannot read {path}: {exc.strerror}") from None


def _write(path: Path, data: bytes, mode: int, *, exclusive: bool = False) -> None:
    """Write ``data`` with ``mode`` from the first byte on; replace atomically unless
    ``exclusive``, which refuses an existing file."""
    try:
        if exclusive:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), mode)
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except FileExistsError:
        raise PkiError(f"{path} exists: refusing to overwrite it") from None
    except OSError as exc:
        raise PkiError(f"cannot write {path}: {exc.strerror}") from None
