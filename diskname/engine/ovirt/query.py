"""The query of an oVirt API request: path ids, flags, ``search``, ``max``, ``follow``."""

from __future__ import annotations

from aiohttp import web

from ..core.models import canonical_uuid
from ..core.search import FIELDS, Search, parse_search
from ..errors import Invalid, NotFound

FOLLOWS = frozenset({"disk_attachments", "disk_attachments.disk"})
_BOOLEANS = {"true": True, "false": False}


def path_id(request: web.Request, name: str, what: str) -> str:
    """A path id; one that is no UUID names nothing here, as in oVirt: 404."""
    value = request.match_info[name]
    try:
        return canonical_uuid(value)
    except ValueError:
        raise NotFound(f"no {what} {value!r}") from None


def flag(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    if value.lower() not in _BOOLEANS:
        raise Invalid(f"{name} must be true or false, not {value!r}")
    return _BOOLEANS[value.lower()]


def search(request: web.Request, collection: str) -> Search | None:
    """``search`` over one collection's fields (:data:`..core.search.FIELDS`)."""
    return parse_search(
        request.query.get("search"),
        FIELDS[collection],
        case_sensitive=flag(request, "case_sensitive", True),
    )


def max_count(request: web.Request) -> int | None:
    """``max``: a count, or -1 for no limit (oVirt's own meaning)."""
    value = request.query.get("max")
    if value is None or value.strip() == "-1":
        return None
    if not value.strip().isdigit() or len(value) > 9:
        raise Invalid(f"max must be a whole number (or -1), not {value!r}")
    return int(value)


def listing(request: web.Request, collection: str) -> tuple[Search | None, int | None]:
    return search(request, collection), max_count(request)


def follow(request: web.Request) -> set[str]:
    wanted = {f.strip() for f in request.query.get("follow", "").split(",") if f.strip()}
    unknown = wanted - FOLLOWS
    if unknown:
        raise Invalid(f"cannot follow {sorted(unknown)}: only {sorted(FOLLOWS)} are served")
    return wanted


def check_version(request: web.Request) -> None:
    version = request.headers.get("Version")
    if version is not None and version.strip() != "4":
        raise Invalid(f"only version 4 of oVirt's API is served, not {version!r}")
