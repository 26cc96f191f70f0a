"""``?wait=logical_name&timeout=S``: how long a GET of an attachment may wait for its name.

Both edges (the JSON API, oVirt's XML API) take the same query (SPEC §18), and
this is its one rule: ``wait`` names what to wait for (only ``logical_name``);
``timeout`` is seconds, more than 0 and at most :data:`MAX_WAIT`, and
:data:`DEFAULT_WAIT` when left out. A ``timeout`` without ``wait`` is checked and
changes nothing (the OpenAPI document cannot say one parameter needs the other).
"""

from __future__ import annotations

import math

from ..errors import Invalid

WAIT_FOR = "logical_name"
MAX_WAIT = 300.0
DEFAULT_WAIT = 30.0
_TIMEOUT_MAX_CHARS = 32


def wait_timeout(wait: str | None, timeout: str | None) -> float | None:
    """The seconds to wait for the name; None when the request does not wait."""
    seconds = DEFAULT_WAIT if timeout is None else _seconds(timeout)
    if wait is None:
        return None
    if wait != WAIT_FOR:
        raise Invalid(f"wait takes only {WAIT_FOR!r}, not {wait[:64]!r}")
    return seconds


def _seconds(text: str) -> float:
    try:
        value = float(text) if len(text) <= _TIMEOUT_MAX_CHARS else math.nan
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_WAIT:  # NaN fails this too
        raise Invalid(f"timeout must be seconds, more than 0 and at most {MAX_WAIT:g}")
    return value
