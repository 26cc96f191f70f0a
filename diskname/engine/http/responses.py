"""The JSON API's response bodies (its errors' are :func:`.errors.error_response`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson
from aiohttp import web

T = TypeVar("T")
LIST_CHUNK = 1000  # items whose JSON objects exist at once while a listing is encoded


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def json_list_response(key: str, items: Sequence[T], to_json: Callable[[T], Any]) -> web.Response:
    """``{key: [to_json(item), ...]}``, encoded :data:`LIST_CHUNK` items at a time.

    A listing of 100,000 VMs as one list of dicts costs twice its rows in memory
    at its peak, and what the allocator takes at a peak it keeps; in chunks the
    peak is the body's bytes.
    """
    parts = [
        orjson.dumps([to_json(item) for item in items[start : start + LIST_CHUNK]])[1:-1]
        for start in range(0, len(items), LIST_CHUNK)
    ]
    body = b'{"' + key.encode() + b'":[' + b",".join(parts) + b"]}"
    return web.Response(body=body, content_type="application/json")
