"""JSON through orjson when it is installed, else through the standard json module.

The host and the engine always have orjson (a base dependency). A guest
running ``diskname-agent.pyz`` on its distribution's python3 may not, and
gets :mod:`._stdjson`: the same names, the subset of orjson's API diskname
uses (``dumps`` to bytes with ``OPT_SORT_KEYS``/``OPT_INDENT_2``/``default``,
``loads`` of bytes or text, ``JSONDecodeError``). ``BACKEND`` says which.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orjson import OPT_INDENT_2, OPT_SORT_KEYS, JSONDecodeError, dumps, loads

    BACKEND: str
else:
    try:
        from orjson import OPT_INDENT_2, OPT_SORT_KEYS, JSONDecodeError, dumps, loads

        BACKEND = "orjson"
    except ImportError:
        from ._stdjson import OPT_INDENT_2, OPT_SORT_KEYS, JSONDecodeError, dumps, loads

        BACKEND = "json"

__all__ = ["BACKEND", "OPT_INDENT_2", "OPT_SORT_KEYS", "JSONDecodeError", "dumps", "loads"]
