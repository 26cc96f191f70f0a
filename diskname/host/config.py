"""The host's configuration, resolved once at the edge (CLI, dev mode, tests), and the
checks that refuse a configuration which cannot be served safely."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..config import ConfigError, hidden, setting
from ..connguard import GuardLimits
from ..connguard.rules import HEAD_TIMEOUT, IDLE_TIMEOUT, MAX_CONNECTIONS, MAX_PER_ADDRESS
from ..netaddr import is_loopback
from .hypervisors.factory import HypervisorName


@dataclass(frozen=True, slots=True)
class HostConfig:
    listen_host: str = setting(
        "127.0.0.1", "serve JSON-RPC for the engine here", flag="--listen", port="listen_port"
    )
    listen_port: int = setting(54321, "the port of --listen", flag=False)
    state_dir: Path = setting(Path("state/host"), "VM definitions survive restarts here")
    channels_dir: Path = setting(Path("state/channels"), "per-VM agent channel sockets")
    # "connect" (SPEC §4): QEMU serves the socket. Dev mode and tests run the
    # agent themselves and it connects to us, so they pass "listen".
    channel_mode: Literal["connect", "listen"] = setting(
        "connect", "connect to the sockets QEMU serves, or serve them"
    )
    hypervisor: HypervisorName = setting("sim", "the VMs' backend")
    host_id: str | None = setting(None, "this host's id", unset="a UUID made from the FQDN")
    agent_timeout: float = setting(
        15.0, "seconds of silence that make an agent unresponsive (three heartbeats)", flag=False
    )
    agent_rate_limit: int = setting(
        1000, "messages a second a guest may send before the excess is dropped", flag=False
    )
    qemu_ga: bool = setting(
        True, "ignore qemu-ga channels (else asked after each hot-plug and every qga_interval)"
    )
    qga_interval: float = setting(30.0, "seconds between qemu-ga polls")
    tls_cert: Path | None = setting(None, "serve JSON-RPC over TLS with this certificate")
    tls_key: Path | None = setting(None, "the private key of --tls-cert")
    tls_ca: Path | None = setting(None, "require client certificates signed by this CA")
    rpc_token: str | None = setting(
        None, "clients must call Host.authenticate {token} first", mask=hidden
    )
    notify_rate: float = setting(
        2.0, "hash-change notifications a second per VM, after a burst", flag=False
    )
    notify_burst: float = setting(
        3.0, "hash-change notifications per VM at once (the latest always goes out)", flag=False
    )
    sim_unplug_delay: float = setting(
        0.0, "sim hypervisor: seconds a guest holds a disk before releasing it"
    )
    libvirt_uri: str = setting("qemu:///system", "libvirt: the daemon to follow")
    libvirt_pool: str | None = setting(
        None, "libvirt: storage pool for new disks", unset="none, images in the state dir"
    )
    storage_domain: str = setting(
        "data", "sim and qemu: the name of the host's storage domain (libvirt: its pools)"
    )
    insecure_plaintext: bool = setting(False, "allow plain TCP on an address that is not loopback")
    agent_channels: bool = setting(
        True,
        "an agent (and qemu-ga) channel per VM; off: the hypervisor reports the guests'"
        " mappings itself, as the bench's light guests",
        flag=False,
    )
    max_connections: int = setting(MAX_CONNECTIONS, "JSON-RPC connections at once")
    max_connections_per_address: int = setting(
        MAX_PER_ADDRESS, "JSON-RPC connections at once from one address"
    )
    head_timeout: float = setting(
        HEAD_TIMEOUT,
        "seconds a new connection has to send its request, TLS handshake included",
    )
    idle_timeout: float = setting(
        IDLE_TIMEOUT, "seconds an idle connection is kept before it is closed"
    )


def check_listen(config: HostConfig) -> None:
    """Refuse (:class:`ConfigError`) to serve JSON-RPC to a network without authenticating
    clients: off loopback, TLS, and a client certificate (``tls_ca``) or a token."""
    where = f"{config.listen_host or '*'}:{config.listen_port}"
    if is_loopback(config.listen_host):
        return
    if config.tls_cert is None:
        if config.insecure_plaintext:
            return
        raise ConfigError(
            f"refusing to serve JSON-RPC on {where} without TLS: give --tls-cert, --tls-key "
            "and --tls-ca (diskname pki issue makes them), or --insecure-plaintext"
        )
    if config.tls_ca is None and config.rpc_token is None:
        raise ConfigError(
            f"refusing to serve JSON-RPC on {where} to any client: give --tls-ca (the engine "
            "CA, so only the engine's certificate gets in) or --rpc-token"
        )


def rpc_limits(config: HostConfig) -> GuardLimits:
    return GuardLimits(
        config.max_connections,
        config.max_connections_per_address,
        config.head_timeout,
        config.idle_timeout,
    )
