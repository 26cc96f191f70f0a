"""``GET /api/events``: server-sent events of logical-name changes, resumable.

A change of a guest's view of a disk (SPEC §17) goes as ``event: guest``
(``{"kind": "guest", "id", "vm_id", "disk_id", "guest"}``), so that clients
listening to plain messages see name changes only, as before.

Every event carries ``id:``, the id of its row in the name history, so a client
that reconnects with ``Last-Event-ID`` (browsers' EventSource does so by itself)
is first sent what it missed, from the history, then the live events. A comment
line goes out whenever the stream has been quiet for ``events_keepalive``
seconds (15 by default), so proxies do not cut an idle stream.

A user holds at most ``max_event_streams_per_user`` streams at once (SPEC §19;
without credentials on loopback, each address counts as a user); one more is a
429 before anything is sent. A stream whose client hung up stops counting when
the engine notices, at its next write (``events_keepalive`` at the latest).
"""

from __future__ import annotations

import logging
import re

import orjson
from aiohttp import web

from ..core.models import GUEST_AGENT_EVENT, GuestChange
from ..db.catalog import Catalog
from ..errors import TooManyRequests, Unavailable
from ..events import Subscription
from . import auth
from .context import CTX

log = logging.getLogger(__name__)

REPLAY_PAGE = 500
# A client further behind than this is told to reload instead (event "reset").
MAX_REPLAY = 10_000
RETRY_MS = 2000


def last_event_id(request: web.Request) -> int | None:
    """The id a reconnecting client saw last (header, or ``?last_event_id=``)."""
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    if raw is None or not re.fullmatch(r"[0-9]{1,18}", raw.strip()):
        return None
    return int(raw.strip())


def stream_owner(request: web.Request) -> str:
    """Whose quota a stream counts against: the user, or the address of an anonymous one."""
    principal = auth.caller(request)
    if principal.via == "anonymous":
        return f"anonymous@{request.remote}"
    return principal.name


NAMED_KINDS = frozenset({GuestChange.KIND, GUEST_AGENT_EVENT})


def encode(event: dict[str, object], kind: str | None = None) -> bytes:
    """One event; a guest's view (``"kind": "guest"``) goes as ``event: guest``."""
    head = f"id: {event['id']}\n" if event.get("id") is not None else ""
    if kind is None and event.get("kind") == GuestChange.KIND:
        kind = GuestChange.KIND
    if kind is not None:
        head += f"event: {kind}\n"
    return head.encode() + b"data: " + orjson.dumps(event) + b"\n\n"


async def events(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    resume_from = last_event_id(request)
    owner = stream_owner(request)
    credential = auth.caller(request).credential
    cap = ctx.config.max_event_streams_per_user
    if ctx.hub.held_by(owner) >= cap:
        raise TooManyRequests(
            f"{owner} already holds {cap} event streams (max_event_streams_per_user)",
            retry_after=RETRY_MS / 1000,
        )
    # Subscribe before reading the history, so nothing falls between the two.
    with (
        ctx.hub.subscription(owner) as subscription,
        ctx.auth.sessions.holding(credential, subscription),
    ):
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        await response.write(f": connected\nretry: {RETRY_MS}\n\n".encode())
        try:
            seen = resume_from
            if resume_from is not None:
                seen = await _replay(ctx.catalog, response, resume_from)
            await _live(response, subscription, seen, ctx.config.events_keepalive)
        except ConnectionError:
            log.debug("event subscriber went away")
        except Unavailable as exc:
            log.info("ending an event stream, database unavailable: %s", exc)
    return response


async def _replay(catalog: Catalog, response: web.StreamResponse, after: int) -> int:
    """Send the changes stored after ``after``; return the last id sent."""
    sent = 0
    while True:
        page = await catalog.events_after(after, REPLAY_PAGE)
        for change in page:
            await response.write(encode(change.to_json()))
        if page:
            after = page[-1].id or after
        sent += len(page)
        if len(page) < REPLAY_PAGE:
            return after
        if sent >= MAX_REPLAY:
            latest = await catalog.latest_change_id()
            await response.write(encode({"id": latest, "reason": "too far behind"}, "reset"))
            return latest


async def _live(
    response: web.StreamResponse, subscription: Subscription, seen: int | None, keepalive: float
) -> None:
    while True:
        try:
            event = await subscription.next(keepalive)
        except EOFError:  # the engine is stopping, or the sign-in ended (.sessions)
            if subscription.ended is not None:
                await response.write(encode({"reason": subscription.ended}, "end"))
            return
        if event is None:
            await response.write(b": keepalive\n\n")
            continue
        event_id = event.get("id")
        if seen is not None and isinstance(event_id, int) and event_id <= seen:
            continue  # already sent from the history
        await response.write(encode(event))


def routes() -> list[web.RouteDef]:
    return [web.get("/api/events", events)]
