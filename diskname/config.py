"""Settings declared once, resolved once, at the edge, into a frozen dataclass.

A config class declares each setting as a field: its type, and
:func:`setting` gives the default and a :class:`Doc` (help, flag, how
``config --show`` masks it). From that one declaration come the TOML key (the
field name), the environment variable (``DISKNAME_<FIELD>``), the flag
(:mod:`diskname.flags`), ``--help`` and the man page (:mod:`diskname.manpage`).

Sources in increasing precedence: the defaults, a TOML file (``--config``;
keys at top level or under ``[agent]``/``[host]``/``[engine]``/``[dev]``/
``[bench]``), environment variables and command-line flags. Every value is
checked against the field's type, a ``Literal`` mode against its words; a
wrong one is a :class:`ConfigError` that names where it came from, the key,
and what was expected. Imported by the agent and the client: standard
library and Python 3.9 only.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from . import compat
from .compat import SLOTS, toml

T = TypeVar("T")
ENV_PREFIX = "DISKNAME_"
SECTIONS = ("agent", "host", "engine", "dev", "bench")


class ConfigError(Exception):
    """A configuration value is unknown, malformed, or cannot work here.

    Services raise it (or a subclass) when a resolved setting cannot be used,
    e.g. ``--source sim`` without ``--sim-hw``; the CLI prints it without a
    traceback and exits 2.
    """


def hidden(value: Any) -> str:
    return "***"


# The secrets a libpq connection string may carry, in a URL's query or as key=value.
DSN_SECRETS = ("password", "sslpassword")
_SECRET_NAMES = "|".join(DSN_SECRETS)
_URL_SECRET = re.compile(r"([?&](?:" + _SECRET_NAMES + r")=)[^&#]*", re.IGNORECASE)
_KEYWORD_SECRET = re.compile(
    r"((?:^|\s)(?:" + _SECRET_NAMES + r")\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)", re.IGNORECASE
)


def password_hidden(dsn: Any) -> Any:
    """A connection string shown with every secret as ``***``: the password of a URL's
    user (``scheme://user:***@host``), ``?password=`` and ``?sslpassword=`` in its
    query, and ``password=`` in the key=value form (``host=a password=***``)."""
    text = str(dsn)
    if "://" not in text:
        return _KEYWORD_SECRET.sub(r"\1***", text)
    scheme, _, rest = text.partition("://")
    authority, tail = _split_authority(rest)
    userinfo, at, hosts = authority.rpartition("@")
    user, has_password, _ = userinfo.partition(":")
    if at and has_password:
        authority = user + ":***@" + hosts
    return scheme + "://" + authority + _URL_SECRET.sub(r"\1***", tail)


def _split_authority(rest: str) -> tuple[str, str]:
    """``user:pw@h1,h2`` and what follows it (from the first ``/``, ``?`` or ``#``
    after the last ``@``: a password may hold any of them)."""
    start = rest.rfind("@") + 1
    ends = [i for i in (rest.find(mark, start) for mark in "/?#") if i != -1]
    end = min(ends, default=len(rest))
    return rest[:end], rest[end:]


@dataclasses.dataclass(frozen=True, **SLOTS)
class Doc:
    """How a setting is described and set, beside its type and default.

    ``flag``: True derives it (``--state-dir``; ``--no-events`` for a bool
    that is on by default), a string names it, False leaves the setting to the
    file and the environment. ``unset`` says what None means. ``port`` names
    the port field that a ``HOST:PORT`` flag on this host field sets too.
    ``mask`` is how ``config --show`` prints a secret.
    """

    help: str
    flag: str | bool = True
    metavar: str | None = None
    unset: str = "none"
    port: str | None = None
    mask: Callable[[Any], Any] | None = None


def setting(
    default: Any,
    help: str,
    *,
    flag: str | bool = True,
    metavar: str | None = None,
    unset: str = "none",
    port: str | None = None,
    mask: Callable[[Any], Any] | None = None,
) -> Any:
    """A dataclass field: the setting's default and its :class:`Doc`."""
    doc = Doc(help, flag, metavar, unset, port, mask)
    return dataclasses.field(default=default, metadata={"doc": doc})


_SAME: Any = object()


def like(cls: type[Any], name: str, default: Any = _SAME, **changes: Any) -> Any:
    """The setting ``name`` of ``cls`` declared again, with what ``changes`` says differs."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    doc = dataclasses.replace(field.metadata["doc"], **changes)
    value = field.default if default is _SAME else default
    return dataclasses.field(default=value, metadata={"doc": doc})


@dataclasses.dataclass(frozen=True)
class Setting:
    """One field of a config class, with everything derived from its declaration."""

    name: str
    type: Any
    default: Any
    doc: Doc
    shown: str  # the default as --help and the man page say it

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str | None:
        if isinstance(self.doc.flag, str):
            return self.doc.flag
        if not self.doc.flag:
            return None
        dashed = self.name.replace("_", "-")
        return f"--no-{dashed}" if self.default is True else f"--{dashed}"

    @property
    def words(self) -> tuple[str, ...]:
        """A ``Literal`` mode's words (empty for any other type)."""
        return next((typing.get_args(k) for k in _kinds(self.type)[0] if _is_literal(k)), ())


def settings(cls: type[Any]) -> list[Setting]:
    """Every setting of a config class, in declaration order."""
    hints = compat.type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    found = []
    for name, f in fields.items():
        doc = f.metadata.get("doc") or Doc("", flag=False)
        shown = text(f.default, doc.unset)
        if doc.port is not None:
            shown += f":{fields[doc.port].default}"
        found.append(Setting(name, hints[name], f.default, doc, shown))
    return found


def text(value: Any, unset: str = "none") -> str:
    """A value as the help says it: ``3`` for 3.0, ``on`` for True."""
    if value is None:
        return unset
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _is_literal(kind: Any) -> bool:
    return typing.get_origin(kind) is Literal


def _kinds(tp: Any) -> tuple[tuple[Any, ...], bool]:
    """The types a field accepts, and whether it may be None."""
    if compat.is_union(tp):
        args = typing.get_args(tp)
        return tuple(a for a in args if a is not type(None)), type(None) in args
    return (tp,), False


def _convert(value: Any, tp: Any, where: str, key: str) -> Any:
    kinds, optional = _kinds(tp)
    if value is None or (optional and value == ""):
        if optional:
            return None
        raise ConfigError(f"{where}: {key} must not be empty")
    for kind in kinds:
        converted = _as(kind, value)
        if converted is not _FAIL:
            return converted
    names = " or ".join(_expected(k) for k in kinds)
    raise ConfigError(f"{where}: {key} = {value!r} is not valid: expected {names}")


def _expected(kind: Any) -> str:
    if _is_literal(kind):
        return "one of " + ", ".join(typing.get_args(kind))
    return str(kind.__name__)


_FAIL = object()


def _as(kind: Any, value: Any) -> Any:
    try:
        if _is_literal(kind):
            return value if value in typing.get_args(kind) else _FAIL
        if kind is bool:
            return _as_bool(value)
        if kind in (int, float) and isinstance(value, bool):
            return _FAIL
        if kind is int:
            return int(value) if not isinstance(value, float) else _FAIL
        if kind is float:
            return float(value)
        if kind is Path:
            return Path(value) if isinstance(value, (str, Path)) else _FAIL
        if kind is str:
            return value if isinstance(value, str) else _FAIL
    except (TypeError, ValueError):
        return _FAIL
    return _FAIL


def _as_bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    return _FAIL


def load_file(path: Path, section: str) -> dict[str, Any]:
    """Read the keys that apply to ``section`` from a TOML file."""
    try:
        data = toml.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except toml.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    flat = {k: v for k, v in data.items() if k not in SECTIONS}
    own = data.get(section, {})
    if not isinstance(own, dict):
        raise ConfigError(f"{path}: [{section}] must be a table")
    return {**flat, **own}


def resolve(
    cls: type[T],
    section: str,
    *,
    file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls`` from defaults, file, environment and flags (flags win)."""
    known = {s.name: s for s in settings(cls)}
    values: dict[str, Any] = {}
    if file is not None:
        for key, raw in load_file(file, section).items():
            if key not in known:
                names = ", ".join(sorted(known))
                raise ConfigError(f"{file}: unknown key {key!r} for {section} (known: {names})")
            values[key] = _convert(raw, known[key].type, str(file), key)
    for s in known.values():
        if env is not None and s.env in env:
            values[s.name] = _convert(env[s.env], s.type, "environment", s.env)
    for key, raw in (flags or {}).items():
        flag = known[key].flag or "--" + key.replace("_", "-")
        values[key] = _convert(raw, known[key].type, "command line", flag)
    return cls(**values)


def show(config: Any) -> dict[str, Any]:
    """The effective configuration as plain JSON, secrets masked."""
    shown: dict[str, Any] = {}
    for s in settings(type(config)):
        value = getattr(config, s.name)
        if value is not None and s.doc.mask is not None:
            value = s.doc.mask(value)
        shown[s.name] = str(value) if isinstance(value, Path) else value
    return shown
