"""What each command needs beyond the agent, and one line saying so when it is missing.

``pip install diskname`` is the agent alone (pyudev, orjson): it goes into
every guest. The other tiers come with extras (SPEC §16): ``diskname[host]``,
``diskname[engine]``, ``diskname[all]``. Asking for a tier that is not
installed is answered before anything is imported: which extra, and the pip
line that installs it; never an ImportError traceback. A new extra is one
entry in :data:`EXTRAS` (and its list in pyproject.toml).
"""

from __future__ import annotations

import importlib.util
import sys

from .config import ConfigError

# extra -> the modules it brings (checked with find_spec, never imported here).
EXTRAS: dict[str, tuple[str, ...]] = {
    "host": (),
    "engine": ("aiohttp", "asyncpg", "cryptography", "defusedxml"),
    "libvirt": ("libvirt",),
}
# command -> (the subpackage that implements it, the extras it needs, the oldest Python).
COMMANDS: dict[str, tuple[str, tuple[str, ...], tuple[int, int]]] = {
    "agent": ("diskname.agent", (), (3, 9)),
    "host": ("diskname.host", ("host",), (3, 11)),
    "engine": ("diskname.engine", ("engine",), (3, 11)),
    "dev": ("diskname.dev", ("host", "engine"), (3, 11)),
    "bench": ("diskname.bench", ("host", "engine"), (3, 11)),
    "agent-pyz": ("diskname.pyz", (), (3, 9)),
    "pki": ("diskname.pki", ("engine",), (3, 11)),
    "user": ("diskname.engine", ("engine",), (3, 11)),
}


class MissingExtra(ConfigError):
    """A command needs a part of diskname that is not installed here."""


def pip_name(extras: tuple[str, ...]) -> str:
    """``diskname[engine]``; several extras are ``diskname[all]``."""
    return f"diskname[{extras[0] if len(extras) == 1 else 'all'}]"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # its parent package is missing
        return False


def require(extras: tuple[str, ...], what: str) -> None:
    """Raise :class:`MissingExtra` unless every module of ``extras`` is installed."""
    absent = [m for extra in extras for m in EXTRAS[extra] if not _installed(m)]
    if absent:
        name = pip_name(extras)
        raise MissingExtra(
            f"{what} needs the {name[len('diskname') :]} extra "
            f"({', '.join(absent)} not installed): pip install '{name}'"
        )


def check(command: str) -> None:
    """Raise :class:`MissingExtra` when ``diskname COMMAND`` cannot run here."""
    if command not in COMMANDS:
        return
    module, extras, oldest = COMMANDS[command]
    if sys.version_info < oldest:
        this = ".".join(map(str, sys.version_info[:3]))
        raise MissingExtra(
            f"{command} needs Python {oldest[0]}.{oldest[1]}+ (this is {this}); "
            "the agent alone runs on 3.9+"
        )
    if not _installed(module):
        install = f"pip install '{pip_name(extras)}'" if extras else "pip install diskname"
        raise MissingExtra(f"{command} is not in this agent-only build: {install}")
    if extras:
        require(extras, command)
