"""The hypervisor backend a host's configuration names: sim, qemu or libvirt.

The qemu and libvirt backends are imported only when chosen: libvirt-python is
an optional dependency, and a sim host should not pay for either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, cast, get_args

from ...config import ConfigError
from ..storage import DirectoryDomain, Domains, MemoryDomain
from .base import Hypervisor
from .sim import SimHypervisor

if TYPE_CHECKING:
    from ..config import HostConfig

# The one list of backends: the setting's Literal, its --help and the error below.
HypervisorName = Literal["sim", "qemu", "libvirt"]

LIBVIRT_MISSING = (
    "--hypervisor libvirt needs libvirt-python: pip install 'diskname[libvirt]'"
    " (it builds against the libvirt-dev and pkg-config packages), or apt install python3-libvirt"
)


def make_hypervisor(config: HostConfig) -> Hypervisor:
    if config.hypervisor == "sim":
        return SimHypervisor(config.channels_dir, config.sim_unplug_delay)
    if config.hypervisor == "qemu":
        from .qemu import QemuHypervisor

        return QemuHypervisor(config.channels_dir, config.state_dir)
    if config.hypervisor == "libvirt":
        return _libvirt_hypervisor(config)
    names = ", ".join(get_args(HypervisorName))
    raise ConfigError(f"hypervisor {config.hypervisor!r} is not available (use {names})")


def make_storage(config: HostConfig, hypervisor: Hypervisor) -> Domains:
    """Where the host creates floating disks' images (:mod:`..storage`)."""
    pools = getattr(hypervisor, "pool_domains", None)  # libvirt: its storage pools
    if pools is not None:
        return cast(Domains, pools)
    if config.hypervisor == "qemu":
        return DirectoryDomain(config.storage_domain, config.state_dir / "images")
    return MemoryDomain(config.storage_domain)


def _libvirt_hypervisor(config: HostConfig) -> Hypervisor:
    try:
        from .libvirt import LibvirtHypervisor
    except ImportError as exc:
        if exc.name in ("libvirt", "libvirtaio", "libvirtmod"):
            raise ConfigError(LIBVIRT_MISSING) from None
        raise
    return LibvirtHypervisor(
        config.libvirt_uri,
        config.state_dir / "images",
        config.libvirt_pool,
        qemu_ga=config.qemu_ga,
        qga_interval=config.qga_interval,
    )
