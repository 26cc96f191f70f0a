"""Addresses, as every tier judges them (shared: tiers do not import each other)."""

from __future__ import annotations

import ipaddress


def is_loopback(address: str) -> bool:
    """``127.0.0.0/8``, ``::1`` or ``localhost``; not the wildcard address."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False
