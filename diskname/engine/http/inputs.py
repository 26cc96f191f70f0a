"""Control characters are refused wherever a request carries text (SPEC §19).

A NUL, an escape sequence or a line break has no business in a path, a query or
a body field of this API: at best it is a mistake, at worst it is meant for a
terminal, a log line or PostgreSQL (which refuses NUL in text, with a 500). The
middleware :func:`clean` checks the path and the query of every request; the
parsers check each body field they read with :func:`check_text` (fields the API
does not read are ignored, as the document allows, and never stored). Each
refusal is an :class:`Invalid` (400) naming where the character was.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from ..errors import Invalid

# C0, DEL and C1; the OpenAPI document spells the same rule (NO_CONTROL_PATTERN).
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
NO_CONTROL_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"


def check_text(value: str, what: str) -> None:
    """Raise :class:`Invalid` if ``value`` holds a control character."""
    found = CONTROL.search(value)
    if found is not None:
        raise Invalid(f"{what} contains a control character ({ord(found.group()):#04x})")


def check_request_line(request: web.Request) -> None:
    """The decoded path and every query name and value."""
    check_text(request.path, "the path")
    for name, value in request.query.items():
        check_text(name, "a query parameter name")
        check_text(value, f"query parameter {name!r}")


@web.middleware
async def clean(request: web.Request, handler: Any) -> web.StreamResponse:
    check_request_line(request)
    response: web.StreamResponse = await handler(request)
    return response
