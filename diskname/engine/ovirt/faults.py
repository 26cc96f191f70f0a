"""oVirt's errors: the engine's error classes as ``<fault>`` answers (SPEC §14).

oVirt's SDK turns a status into its own exception (404: ``NotFoundError``, 401
and 403: ``AuthError``, anything else: ``Error``) carrying the fault's
``<detail>``: this table is part of oVirt's contract. Today it answers as the
JSON API's (:data:`..http.errors.REST`), which it extends.
"""

from __future__ import annotations

from aiohttp import web

from ..http.errors import REST, Answer, ByClass
from . import xmlout
from .routes import xml_response
from .xmlout import PREFIX

# The JSON API's statuses; an error oVirt's clients must see otherwise gets its
# line in this dict.
FAULTS: ByClass[Answer] = REST.extended({})


def is_ovirt_api(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def fault_response(status: int, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    """``<fault><reason/><detail/></fault>`` with ``status``."""
    return xml_response(xmlout.fault(status, detail), status, headers)
