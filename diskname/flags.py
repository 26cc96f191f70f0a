"""Every service subcommand's flags, with what each does and its default.

Flags left off the command line are not set at all (``default=SUPPRESS``), so a
flag never hides the same setting from the TOML file or the environment
(:mod:`diskname.config` resolves all three). Imported by the agent too: keep it
to the standard library and Python 3.9.
"""

from __future__ import annotations

import argparse

S = argparse.SUPPRESS


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _add_agent(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--connect",
        default=S,
        metavar="unix:PATH|tcp:HOST:PORT",
        help="talk to the host over this socket (default: the virtio-serial port)",
    )
    p.add_argument(
        "--channel",
        default=S,
        metavar="PATH",
        help="the virtio-serial port (default: /dev/virtio-ports/ovirt-guest-agent.0,"
        " then com.redhat.rhevm.vdsm)",
    )
    p.add_argument(
        "--source",
        choices=["udev", "sim"],
        default=S,
        help="where disks come from: udev, or the sim hypervisor's port (default: udev)",
    )
    p.add_argument(
        "--sim-hw",
        default=S,
        metavar="unix:PATH",
        help="--source sim: the sim hardware port (default: none)",
    )
    p.add_argument(
        "--report-interval", default=S, help="seconds between full reports (default: 60)"
    )
    p.add_argument("--heartbeat-interval", default=S, help="seconds (default: 5)")
    p.add_argument(
        "--name-delay",
        default=S,
        help="--source sim: seconds until a plugged disk shows (default: 0)",
    )
    p.add_argument(
        "--uevents",
        choices=["udev", "kernel"],
        default=S,
        help="which uevents to follow (default: udev if udevd runs, else kernel)",
    )
    p.add_argument(
        "--print",
        dest="print_only",
        action="store_true",
        default=S,
        help="print each changed mapping as a JSON line instead of sending it",
    )
    p.add_argument(
        "--once", action="store_true", default=S, help="print the current mapping and exit"
    )


def _add_host(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--listen",
        type=_hostport,
        default=S,
        metavar="HOST:PORT",
        help="serve JSON-RPC for the engine here (default: 127.0.0.1:54321)",
    )
    p.add_argument(
        "--state-dir",
        default=S,
        help="VM definitions survive restarts here (default: state/host)",
    )
    p.add_argument(
        "--channels-dir",
        default=S,
        help="per-VM agent channel sockets (default: state/channels)",
    )
    p.add_argument(
        "--channel-mode",
        choices=["connect", "listen"],
        default=S,
        help="connect to the sockets QEMU serves, or serve them (default: connect)",
    )
    p.add_argument(
        "--hypervisor",
        choices=["sim", "qemu", "libvirt"],
        default=S,
        help="the VMs' backend (default: sim)",
    )
    p.add_argument("--libvirt-uri", default=S, help="libvirt: the daemon (default: qemu:///system)")
    p.add_argument(
        "--libvirt-pool",
        default=S,
        help="libvirt: storage pool for new disks (default: none, images in the state dir)",
    )
    p.add_argument(
        "--host-id", default=S, help="this host's id (default: a UUID made from the FQDN)"
    )
    p.add_argument(
        "--no-qemu-ga",
        action="store_true",
        default=S,
        help="ignore qemu-ga channels (default: use them)",
    )
    p.add_argument("--qga-interval", default=S, help="seconds between qemu-ga polls (default: 30)")
    p.add_argument(
        "--tls-cert",
        default=S,
        help="serve JSON-RPC over TLS with this certificate (default: none)",
    )
    p.add_argument("--tls-key", default=S, help="the private key of --tls-cert (default: none)")
    p.add_argument(
        "--tls-ca",
        default=S,
        help="require client certificates signed by this CA (default: none)",
    )
    p.add_argument(
        "--rpc-token",
        default=S,
        help="clients must call Host.authenticate {token} first (default: none)",
    )
    p.add_argument(
        "--sim-unplug-delay",
        default=S,
        help="sim hypervisor: seconds a guest holds a disk before releasing it (default: 0)",
    )
    _add_connection_limits(p, "JSON-RPC")
    p.add_argument(
        "--insecure-plaintext",
        action="store_true",
        default=S,
        help="allow plain TCP on an address that is not loopback",
    )


def _add_connection_limits(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--max-connections", default=S, help=f"{what} connections at once (default: 16384)"
    )
    p.add_argument(
        "--max-connections-per-address",
        default=S,
        help=f"{what} connections at once from one address (default: 256)",
    )
    p.add_argument(
        "--head-timeout",
        default=S,
        help="seconds a new connection has to send its request, TLS handshake included"
        " (default: 10)",
    )
    p.add_argument(
        "--idle-timeout",
        default=S,
        help="seconds an idle connection is kept before closing (default: 60)",
    )


def _add_engine(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dsn",
        default=S,
        help="PostgreSQL DSN (default: $DISKNAME_DSN, else an embedded PostgreSQL in STATE_DIR/pg)",
    )
    p.add_argument(
        "--http",
        type=_hostport,
        default=S,
        metavar="HOST:PORT",
        help="serve the REST API and web page here (default: 127.0.0.1:8080)",
    )
    p.add_argument("--state-dir", default=S, help="the engine's files (default: state)")
    p.add_argument("--refresh-interval", default=S, help="seconds between host polls (default: 3)")
    p.add_argument(
        "--api-token",
        default=S,
        help="require 'Authorization: Bearer TOKEN' on /api/ (default: none)",
    )
    p.add_argument(
        "--no-events",
        action="store_true",
        default=S,
        help="ignore the hosts' notifications and poll only (default: use them)",
    )
    p.add_argument(
        "--pki-dir",
        default=S,
        help="the engine PKI (diskname pki init): TLS to every host (default: none)",
    )
    p.add_argument(
        "--https-cert", default=S, help="serve REST and the page over TLS (default: none)"
    )
    p.add_argument("--https-key", default=S, help="the private key of --https-cert (default: none)")
    p.add_argument(
        "--session-lifetime", default=S, help="seconds a sign-in token lives (default: 3600)"
    )
    _add_connection_limits(p, "HTTP")
    p.add_argument(
        "--max-event-streams-per-user",
        default=S,
        help="/api/events streams one user may hold open at once (default: 64)",
    )
    p.add_argument(
        "--insecure-no-auth",
        action="store_true",
        default=S,
        help="serve a non-loopback address with no user and no api token",
    )
    p.add_argument(
        "--anonymous-admin",
        action="store_true",
        default=S,
        help="loopback only: requests without credentials act as admin",
    )
    p.add_argument(
        "--no-hash-gate",
        action="store_true",
        default=S,
        help="fetch every VM fully every cycle (a naive poller; for benchmarks)",
    )


def _add_dev(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hosts", default=S, help="simulated hosts (default: 1)")
    p.add_argument("--vms", default=S, help="VMs per host (default: 2)")
    p.add_argument(
        "--http",
        type=_hostport,
        default=S,
        metavar="HOST:PORT",
        help="serve the REST API and web page here (default: 127.0.0.1:8080)",
    )
    p.add_argument(
        "--rpc-port",
        default=S,
        metavar="PORT",
        help="the first host's JSON-RPC port, one more per host; 0: any free ports, for a new"
        " state dir (default: the HTTP port + 1)",
    )
    p.add_argument(
        "--state-dir",
        default=S,
        help="everything dev mode keeps: PostgreSQL in STATE_DIR/engine/pg, hosts in"
        " STATE_DIR/hostN (default: state)",
    )
    p.add_argument(
        "--dsn",
        default=S,
        help="use this PostgreSQL instead of the embedded one (default: embedded)",
    )
    p.add_argument(
        "--name-delay",
        default=S,
        help="seconds a simulated guest takes to name a disk (default: 0.05)",
    )
    p.add_argument("--refresh-interval", default=S, help="seconds between host polls (default: 3)")
    p.add_argument(
        "--no-events",
        action="store_true",
        default=S,
        help="the engine ignores notifications and polls only (default: use them)",
    )


def _add_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hosts", default=S, help="hosts (default: 2)")
    p.add_argument("--vms-per-host", default=S, help="simulated VMs per host (default: 10)")
    p.add_argument("--hotplugs", default=S, help="hot-plugs timed one after another (default: 20)")
    p.add_argument("--burst", default=S, help="hot-plugs fired at once (default: min(1000, VMs))")
    p.add_argument(
        "--no-events",
        action="store_true",
        default=S,
        help="the engine polls only (default: notifications on)",
    )
    p.add_argument(
        "--refresh-interval", default=S, help="engine poll interval, seconds (default: 3)"
    )
    p.add_argument("--quiet-seconds", default=S, help="length of the quiet window (default: 15)")
    p.add_argument(
        "--no-baseline",
        action="store_true",
        default=S,
        help="skip the naive-poller baseline (default: run it)",
    )
    p.add_argument("--dsn", default=S, help="PostgreSQL to use (default: an embedded one)")
    p.add_argument(
        "--chart",
        default=S,
        metavar="FILE",
        help="write an SVG of the latency distribution (default: none)",
    )
    p.add_argument("--tls", action="store_true", default=S, help="mutual TLS engine <-> hosts")
    p.add_argument(
        "--guests",
        choices=["agent", "light"],
        default=S,
        help="agent: the real agent per VM; light: each host names its VMs' disks, no agent"
        " per VM (default: agent)",
    )


ADDERS = {
    "agent": _add_agent,
    "host": _add_host,
    "engine": _add_engine,
    "dev": _add_dev,
    "bench": _add_bench,
}
HELP = {
    "agent": "run inside a guest: report disk names to the host",
    "host": "run on a hypervisor: VM state and JSON-RPC for the engine",
    "engine": "run management: monitor hosts, store names, serve REST and the web page",
    "dev": "everything in one process, simulated guests, embedded PostgreSQL",
    "bench": "measure the whole system; prints one JSON object last",
}
