"""The engine's own pages: ``/healthz``, ``/metrics``, the web page and the OpenAPI document."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from importlib import resources

from aiohttp import web

from .context import CTX
from .errors import error_response
from .responses import json_response


async def healthz(request: web.Request) -> web.Response:
    if await request.app[CTX].store.ping():
        return json_response({"status": "ok"})
    return error_response(503, "database unreachable")


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    waiting = ctx.hub.waiters.parked
    text = ctx.metrics.render() + (
        "# HELP diskname_engine_name_waiters requests parked until a disk is named (?wait=)\n"
        "# TYPE diskname_engine_name_waiters gauge\n"
        f"diskname_engine_name_waiters {waiting}\n"
    )
    return web.Response(
        text=text,
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Format": "prometheus-0.0.4"},
    )


def _resource(name: str) -> bytes:
    return resources.files(__package__).joinpath("web", name).read_bytes()


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=_resource("openapi.json"), content_type="application/json")


async def index(request: web.Request) -> web.Response:
    page = _resource("index.html")
    return web.Response(
        body=page, content_type="text/html", charset="utf-8", headers=page_headers(page)
    )


@functools.cache
def page_headers(page: bytes) -> dict[str, str]:
    """What the page is allowed (SPEC §19): its own inline script and style, found by
    their hashes, and requests to this engine; nothing else, and no framing at all."""
    scripts = " ".join(_hashes(page, b"script"))
    styles = " ".join(_hashes(page, b"style"))
    policy = (
        f"default-src 'none'; script-src {scripts}; style-src {styles}; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def _hashes(page: bytes, tag: bytes) -> list[str]:
    pattern = rb"<" + tag + rb">(.*?)</" + tag + rb">"
    found = re.findall(pattern, page, flags=re.DOTALL)
    return [
        f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'" for body in found
    ]


def routes() -> list[web.RouteDef]:
    return [
        web.get("/", index),
        web.get("/healthz", healthz),
        web.get("/metrics", metrics),
        web.get("/api/openapi.json", openapi),
    ]
