"""An embedded PostgreSQL (pgserver) for dev mode and engines started without a DSN."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import warnings
from pathlib import Path
from typing import Any

from .config import ConfigError

log = logging.getLogger(__name__)
# pgserver logs every pg_ctl command with its output at INFO; keep it for -v.
logging.getLogger("pgserver").setLevel(logging.WARNING)


class EmbeddedPostgres:
    """Start (or reuse) a PostgreSQL cluster whose data lives in ``data_dir``.

    The server listens on a UNIX socket inside ``data_dir`` only. ``stop()``
    shuts it down; the data stays for the next start.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: Any = None

    async def start(self) -> str:
        """Start the server and return an asyncpg-ready DSN."""
        if importlib.util.find_spec("pgserver") is None:
            raise ConfigError(
                "no dsn is set and the embedded PostgreSQL (pgserver) is not installed: "
                "set dsn, or pip install 'diskname[engine]'"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log.info("starting embedded PostgreSQL in %s", self.data_dir)
        self._server = await asyncio.to_thread(self._start_blocking)
        dsn: str = self._server.get_uri()
        log.info("embedded PostgreSQL ready: %s", dsn)
        return dsn

    def _start_blocking(self) -> Any:
        # Imported late (only needed without a DSN); platformdirs warns at import
        # time when XDG_RUNTIME_DIR is unset, as it is under systemd and in CI.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

            return pgserver.get_server(  # type: ignore[attr-defined]
                str(self.data_dir), cleanup_mode="stop"
            )

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.to_thread(server.cleanup)
