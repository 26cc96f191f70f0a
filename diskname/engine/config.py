"""The engine's configuration, resolved once at the edge (CLI, dev mode, tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Everything the engine needs to run.

    ``dsn`` None starts an embedded PostgreSQL under ``state_dir / "pg"``.
    ``http_port`` 0 binds a free port (read it from ``EngineService.http_port``).
    ``events`` False ignores the hosts' notifications and relies on polling.
    ``hash_gate`` False fetches every VM fully on every cycle (a benchmark baseline).
    ``pki_dir`` holds ``ca.pem``, ``engine.pem`` and ``engine.key``: every host
    connection is TLS, the host's certificate checked against the CA and the
    address it was registered with (:mod:`.hosts.connect`).
    ``https_cert``/``https_key`` serve the REST API and the page over TLS.
    ``insecure_no_auth`` lets a non-loopback address serve with no user and no
    ``api_token``; ``anonymous_admin`` (dev mode, loopback only) lets requests
    without credentials act as admin even when users exist (:mod:`.http.auth`).
    ``session_lifetime``: seconds a sign-in token from the SSO endpoint lives.
    ``action_timeout`` bounds a call made for a user (a plug, an unplug): longer
    than a host's own wait for a guest to release a disk.
    """

    dsn: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    state_dir: Path = Path("state")
    refresh_interval: float = 3.0
    api_token: str | None = None
    events: bool = True
    hash_gate: bool = True
    action_timeout: float = 30.0
    # A poll or a fetch the host does not answer in this long is a timeout (not
    # a lost connection); three poll timeouts in a row reconnect.
    poll_timeout: float = 10.0
    fetch_timeout: float = 30.0
    # The engine PKI (diskname pki init): with it every host connection is TLS.
    pki_dir: Path | None = None
    # Talk plaintext to hosts that are not on loopback (never silently: only so).
    insecure_plaintext_hosts: bool = False
    # REST security (SPEC §11, engine/http/auth.py).
    https_cert: Path | None = None
    https_key: Path | None = None
    insecure_no_auth: bool = False
    anonymous_admin: bool = False
    session_lifetime: float = 3600.0
    # Seconds of silence after which /api/events sends a comment (keeps proxies from cutting it).
    events_keepalive: float = 15.0
    # HTTP connections (SPEC §19, diskname.connguard): caps in all and per peer
    # address; seconds to the first request head (TLS handshake included); idle
    # keep-alives closed after idle_timeout. Event streams one user may hold open.
    max_connections: int = 16384
    max_connections_per_address: int = 256
    head_timeout: float = 10.0
    idle_timeout: float = 60.0
    max_event_streams_per_user: int = 64
