"""How the engine opens a connection to a host: TLS with the engine's PKI, then a token.

With ``pki_dir`` (``diskname pki init``) every host connection is TLS: the host's
certificate must be signed by ``ca.pem`` and name the address the host was
registered with, and the engine presents ``engine.pem``. A host registered with a
token is sent ``Host.authenticate`` right after each connect. Without ``pki_dir``
the engine speaks plaintext only to hosts on loopback, unless told
``insecure_plaintext_hosts``: it never falls back to plaintext silently.

Failures come out as two errors the monitor tells apart: :class:`HostUntrusted`
(the host is there but cannot be trusted, or does not trust us: its status becomes
``untrusted`` with the reason) and :class:`~diskname.streams.ConnectionLost`
(nothing answered: ``unreachable``).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from ...config import ConfigError
from ...netaddr import is_loopback
from ...streams import JsonRpcClient, NotificationHandler, RpcClientError, RpcError
from ..core.models import HostRow
from ..errors import HostUnauthorized
from .refusals import refusal

CA_FILE, CERT_FILE, KEY_FILE = "ca.pem", "engine.pem", "engine.key"
CONNECT_TIMEOUT = 5.0
AUTH_TIMEOUT = 10.0


class HostUntrusted(Exception):
    """The host answered, but the connection cannot be trusted (``str(exc)`` says why)."""


def client_tls(pki_dir: Path | None) -> ssl.SSLContext | None:
    """The engine's TLS client context from ``pki_dir``, or None without one."""
    if pki_dir is None:
        return None
    paths = [pki_dir / name for name in (CA_FILE, CERT_FILE, KEY_FILE)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ConfigError(
            f"pki_dir {pki_dir} lacks {', '.join(missing)} (create it with diskname pki init)"
        )
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(paths[0]))
        context.load_cert_chain(paths[1], paths[2])
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"pki_dir {pki_dir}: cannot load the engine's TLS files: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True  # the certificate must name the registered address
    return context


@dataclass(frozen=True, slots=True)
class HostConnector:
    """Opens authenticated connections to hosts; one per engine, shared by its monitors."""

    tls: ssl.SSLContext | None = None
    insecure_plaintext_hosts: bool = False

    async def open(self, host: HostRow, on_notification: NotificationHandler) -> JsonRpcClient:
        """A connection to ``host``, authenticated; :class:`HostUntrusted` or
        :class:`~diskname.streams.ConnectionLost` otherwise."""
        if self.tls is None and not (self.insecure_plaintext_hosts or is_loopback(host.address)):
            raise HostUntrusted(
                f"{host.address} is not loopback and the engine has no pki_dir: it does not "
                "talk plaintext to hosts off loopback (set pki_dir, or insecure_plaintext_hosts)"
            )
        try:
            client = await JsonRpcClient.connect(
                host.address,
                host.port,
                ssl_context=self.tls,
                server_hostname=host.address.strip("[]"),
                on_notification=on_notification,
                timeout=CONNECT_TIMEOUT,
            )
        except ssl.SSLCertVerificationError as exc:
            raise HostUntrusted(f"its certificate does not verify: {exc.verify_message}") from exc
        except ssl.SSLError as exc:
            raise HostUntrusted(f"TLS handshake failed: {exc.reason or exc}") from exc
        try:
            await self._authenticate(client, host)
        except BaseException:
            await client.close()
            raise
        return client

    async def _authenticate(self, client: JsonRpcClient, host: HostRow) -> None:
        """One round trip before the connection is used: the token, or a ping.

        In TLS 1.3 a host that rejects our certificate says so only after the
        handshake, on the first read: this call is where it shows.
        """
        method, params = (
            ("Host.ping", None)
            if host.token is None
            else ("Host.authenticate", {"token": host.token})
        )
        try:
            await client.call(method, params, timeout=AUTH_TIMEOUT)
        except RpcError as exc:
            if not isinstance(refusal(host.name, method, exc), HostUnauthorized):
                raise HostUntrusted(f"{method} failed: {exc.message}") from exc
            if host.token is None:
                raise HostUntrusted("the host wants a token (register it with one)") from exc
            raise HostUntrusted("the host refused the engine's token") from exc
        except RpcClientError as exc:
            if self.tls is None:
                raise
            raise HostUntrusted(
                f"the host ended the connection after the TLS handshake ({exc}): "
                "does it trust the engine's certificate?"
            ) from exc
