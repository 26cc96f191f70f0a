"""Event streams end with the sign-in that opened them (SPEC §19).

An ``/api/events`` stream is authenticated once, when it opens, and may then
last for hours. :class:`Sessions` remembers which credential opened each stream
and ends the streams of a credential that is no longer good: at once when the
token is signed out here, and otherwise within ``interval`` seconds of the
token expiring, being revoked (by another engine too) or its user being removed
or given a new password (``diskname user``, another process). One query a round
checks every credential that holds a stream, however many streams there are.

Streams opened with the static ``api_token`` or anonymously (loopback, no users)
hold no credential: they last until the engine stops.

The bookkeeping (:class:`StreamBook`) is a plain object tested without a database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from ..db.users import UserStore, token_digest
from ..errors import EngineError
from ..events import Subscription

log = logging.getLogger(__name__)

CHECK_INTERVAL = 0.5  # seconds: half the second SPEC §19 allows


@dataclass(frozen=True, slots=True)
class Credential:
    """What a stream was opened with: a sign-in token (by digest) or a user's password."""

    kind: Literal["token", "password"]
    key: bytes | str  # the token's SHA-256, or the user's name
    password_hash: str = ""  # the stored hash the password matched

    @classmethod
    def token(cls, token: str) -> Credential:
        return cls("token", token_digest(token))

    @classmethod
    def password(cls, name: str, password_hash: str) -> Credential:
        return cls("password", name, password_hash)


class StreamBook:
    """The open streams of each credential."""

    def __init__(self) -> None:
        self._streams: dict[Credential, set[Subscription]] = {}
        self.held = asyncio.Event()  # set while some credential holds a stream

    def add(self, credential: Credential, stream: Subscription) -> None:
        self._streams.setdefault(credential, set()).add(stream)
        self.held.set()

    def discard(self, credential: Credential, stream: Subscription) -> None:
        streams = self._streams.get(credential)
        if streams is not None:
            streams.discard(stream)
            if not streams:
                del self._streams[credential]
                self._emptied()

    def credentials(self) -> list[Credential]:
        return list(self._streams)

    def end(self, credential: Credential, reason: str) -> int:
        """End every stream of ``credential``; how many there were."""
        streams = self._streams.pop(credential, set())
        for stream in streams:
            stream.end(reason)
        self._emptied()
        return len(streams)

    def _emptied(self) -> None:
        if not self._streams:
            self.held.clear()

    def stale(self, live_tokens: set[bytes], hashes: dict[str, str]) -> list[Credential]:
        """The credentials no longer good, given the live token digests and the
        stored password hash of each user that still exists."""
        return [c for c in self._streams if not _good(c, live_tokens, hashes)]


def _good(credential: Credential, live_tokens: set[bytes], hashes: dict[str, str]) -> bool:
    if credential.kind == "token":
        return credential.key in live_tokens
    return hashes.get(str(credential.key)) == credential.password_hash


class Sessions:
    """The engine's streams per credential, checked against the users' table."""

    def __init__(self, users: UserStore, interval: float = CHECK_INTERVAL) -> None:
        self._users, self._interval = users, interval
        self.book = StreamBook()

    @contextlib.contextmanager
    def holding(self, credential: Credential | None, stream: Subscription) -> Iterator[None]:
        """Count ``stream`` under ``credential`` for the duration of the block."""
        if credential is None:
            yield
            return
        self.book.add(credential, stream)
        try:
            yield
        finally:
            self.book.discard(credential, stream)

    def signed_out(self, token: str) -> None:
        ended = self.book.end(Credential.token(token), "signed out")
        if ended:
            log.info("ended %d event stream(s): their token was signed out", ended)

    async def check(self) -> None:
        """One round: end the streams of every credential that is no longer good."""
        credentials = self.book.credentials()
        if not credentials:
            return
        digests = [c.key for c in credentials if isinstance(c.key, bytes)]
        names = [str(c.key) for c in credentials if c.kind == "password"]
        live = await self._users.live_tokens(digests) if digests else set()
        hashes = await self._users.password_hashes(names) if names else {}
        for credential in self.book.stale(live, hashes):
            ended = self.book.end(credential, "session ended")
            log.info(
                "ended %d event stream(s): their %s expired, was revoked or its user removed",
                ended,
                credential.kind,
            )

    async def run(self) -> None:
        """Check every ``interval`` seconds while some credential holds a stream (none
        does on an engine without users: it then costs no wake-up), until cancelled."""
        while True:
            await self.book.held.wait()
            await asyncio.sleep(self._interval)  # sync-ok: a period, not a wait for something
            try:
                await self.check()
            except EngineError as exc:  # the database away: try again next round
                log.info("cannot check the sign-ins of event streams: %s", exc)
