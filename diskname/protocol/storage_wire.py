"""Storage domains and images between a host and the engine (SPEC §18), without I/O.

- ``Host.getStorageDomains`` → ``{"domains": [StorageDomainInfo...]}``: where the
  host creates images, with their free (``available``) and used bytes.
- ``Image.create`` with an :class:`ImageRequest` → ``true`` once the image exists.
- ``Image.delete`` with ``{"storageDomain", "diskId"}`` → ``true`` if an image went.

Beside :mod:`.host_wire` (the VM messages); same rules: every text has a cap, a
reader gives a message or raises :class:`BadHostMessage`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..compat import SLOTS
from .host_fields import BadHostMessage, as_object, bad, check_id, check_text, is_int

MAX_DOMAIN_NAME = 255
MAX_DOMAINS = 256
DOMAIN_KINDS = ("pool", "directory", "memory")
FORMATS = ("cow", "raw")
# 8 PiB: the largest size a JSON number carries exactly, as the engine's API.
MAX_IMAGE_SIZE = 1 << 53
MAX_BYTES = 1 << 62


def check_domain_name(value: Any) -> str:
    """A domain's name: printable text, no path separator (it may name a directory)."""
    check_text(value, "storageDomain", MAX_DOMAIN_NAME)
    if not value or "/" in value or not value.isprintable() or value in (".", ".."):
        raise bad("bad_field", "storageDomain must be a printable name without '/'")
    return str(value)


@dataclass(frozen=True, **SLOTS)
class StorageDomainInfo:
    """One storage domain as its host lists it."""

    name: str
    kind: str
    available: int
    used: int

    def __post_init__(self) -> None:
        check_domain_name(self.name)
        if self.kind not in DOMAIN_KINDS:
            raise bad("bad_field", f"kind must be one of {', '.join(DOMAIN_KINDS)}")
        for value in (self.available, self.used):
            if not is_int(value) or not 0 <= value <= MAX_BYTES:
                raise bad("bad_field", "available and used must be whole numbers of bytes")

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "available": self.available,
            "used": self.used,
        }

    @classmethod
    def from_wire(cls, raw: Any) -> StorageDomainInfo:
        obj: Any = as_object(raw, "a storage domain")
        return cls(obj.get("name"), obj.get("kind"), obj.get("available"), obj.get("used"))


def parse_domains(raw: Any) -> list[StorageDomainInfo]:
    """``Host.getStorageDomains``'s reply; one bad entry spoils the reply (a lying host)."""
    domains = as_object(raw, "Host.getStorageDomains' reply").get("domains")
    if not isinstance(domains, list) or len(domains) > MAX_DOMAINS:
        raise bad("bad_shape", f"domains must be a list of at most {MAX_DOMAINS}")
    return [StorageDomainInfo.from_wire(d) for d in domains]


@dataclass(frozen=True, **SLOTS)
class ImageRequest:
    """Create the image of disk ``disk_id`` in ``domain``: ``size`` bytes, qcow2 or raw."""

    domain: str
    disk_id: str
    size: int
    format: str = "cow"
    sparse: bool = True

    def __post_init__(self) -> None:
        check_domain_name(self.domain)
        check_id(self.disk_id)
        if not is_int(self.size) or not 0 < self.size <= MAX_IMAGE_SIZE:
            raise bad("bad_field", f"size must be between 1 and {MAX_IMAGE_SIZE} bytes")
        if self.format not in FORMATS:
            raise bad("bad_field", "format must be cow or raw")
        if not isinstance(self.sparse, bool):
            raise bad("bad_field", "sparse must be true or false")

    def to_wire(self) -> dict[str, Any]:
        return {
            "storageDomain": self.domain,
            "diskId": self.disk_id,
            "size": self.size,
            "format": self.format,
            "sparse": self.sparse,
        }

    @classmethod
    def from_wire(cls, raw: Any) -> ImageRequest:
        obj: Any = as_object(raw, "Image.create's params")
        return cls(
            obj.get("storageDomain"),
            obj.get("diskId"),
            obj.get("size"),
            obj.get("format", "cow"),
            obj.get("sparse", True),
        )


__all__ = ["BadHostMessage", "ImageRequest", "StorageDomainInfo", "parse_domains"]
