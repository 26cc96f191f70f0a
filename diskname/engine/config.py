"""The engine's configuration, resolved once at the edge (CLI, dev mode, tests).

Each setting is declared here once (:func:`diskname.config.setting`): its flag,
environment variable, TOML key, help and man page entry come from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import hidden, password_hidden, setting
from ..connguard.rules import HEAD_TIMEOUT, IDLE_TIMEOUT, MAX_CONNECTIONS, MAX_PER_ADDRESS


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Everything the engine needs to run.

    ``http_port`` 0 binds a free port (read it from ``EngineService.http_port``).
    ``pki_dir`` holds ``ca.pem``, ``engine.pem`` and ``engine.key``: every host
    connection is TLS, the host's certificate checked against the CA and the
    address it was registered with (:mod:`.hosts.connect`). ``insecure_no_auth``,
    ``anonymous_admin``: see :mod:`.http.auth`.
    """

    dsn: str | None = setting(
        None, "PostgreSQL DSN", unset="an embedded PostgreSQL in STATE_DIR/pg", mask=password_hidden
    )
    http_host: str = setting(
        "127.0.0.1", "serve the REST API and web page here", flag="--http", port="http_port"
    )
    http_port: int = setting(8080, "the port of --http", flag=False)
    state_dir: Path = setting(Path("state"), "the engine's files")
    refresh_interval: float = setting(3.0, "seconds between host polls")
    api_token: str | None = setting(
        None, "require 'Authorization: Bearer TOKEN' on /api/", mask=hidden
    )
    events: bool = setting(True, "ignore the hosts' notifications and poll only")
    hash_gate: bool = setting(
        True, "fetch every VM fully every cycle (a naive poller; for benchmarks)"
    )
    action_timeout: float = setting(
        30.0,
        "seconds a call made for a user (a plug, an unplug) may take: longer than a host's"
        " own wait for a guest to release a disk",
        flag=False,
    )
    poll_timeout: float = setting(
        10.0,
        "seconds a host has to answer a poll before it is a timeout (not a lost connection);"
        " three in a row reconnect",
        flag=False,
    )
    fetch_timeout: float = setting(30.0, "seconds a host has to answer a fetch", flag=False)
    pki_dir: Path | None = setting(None, "the engine PKI (diskname pki init): TLS to every host")
    insecure_plaintext_hosts: bool = setting(
        False, "talk plaintext to hosts that are not on loopback", flag=False
    )
    https_cert: Path | None = setting(None, "serve REST and the page over TLS")
    https_key: Path | None = setting(None, "the private key of --https-cert")
    insecure_no_auth: bool = setting(
        False, "serve a non-loopback address with no user and no api token"
    )
    insecure_http: bool = setting(
        False, "serve users or an api token on a non-loopback address over plain HTTP"
    )
    anonymous_admin: bool = setting(
        False, "loopback only: requests without credentials act as admin"
    )
    session_lifetime: float = setting(3600.0, "seconds a sign-in token lives")
    events_keepalive: float = setting(
        15.0,
        "seconds of silence after which /api/events sends a comment (keeps proxies from"
        " cutting it)",
        flag=False,
    )
    max_connections: int = setting(MAX_CONNECTIONS, "HTTP connections at once")
    max_connections_per_address: int = setting(
        MAX_PER_ADDRESS, "HTTP connections at once from one address"
    )
    head_timeout: float = setting(
        HEAD_TIMEOUT,
        "seconds a new connection has to send its request head, TLS handshake included",
    )
    idle_timeout: float = setting(
        IDLE_TIMEOUT, "seconds an idle keep-alive connection is kept before it is closed"
    )
    max_event_streams_per_user: int = setting(
        64, "/api/events streams one user may hold open at once"
    )
