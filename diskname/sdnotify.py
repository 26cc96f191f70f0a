"""The systemd notify protocol: a datagram to ``$NOTIFY_SOCKET``.

``READY=1`` once a service really serves, ``WATCHDOG=1`` every half
``$WATCHDOG_USEC``, ``STOPPING=1`` when shutdown begins. Without
``NOTIFY_SOCKET`` (not under systemd) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        # A leading "@" names a socket in the abstract namespace.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and mine else None
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, state: str) -> None:
        if not self._address:
            return
        try:
            if self._sock is None:
                # NOTIFY_SOCKET is a UNIX socket: never set on Windows, whose stubs lack AF_UNIX.
                family = socket.AF_UNIX  # type: ignore[attr-defined,unused-ignore]
                self._sock = socket.socket(family, socket.SOCK_DGRAM)
            self._sock.sendto(state.encode(), self._address)
        except OSError as exc:
            log.warning("cannot notify systemd (%s): %s", state, exc)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
