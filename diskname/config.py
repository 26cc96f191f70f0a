"""Configuration resolved once, at the edge, into a tier's frozen dataclass.

Sources in increasing precedence: the dataclass defaults, a TOML file
(``--config``; keys at top level or under ``[agent]``/``[host]``/``[engine]``/
``[dev]``), environment variables ``DISKNAME_<KEY>`` and command-line flags.
Every value is checked against the field's type; a wrong one is a
:class:`ConfigError` that names where it came from, the key, and what was
expected.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from . import compat
from .compat import toml

T = TypeVar("T")
ENV_PREFIX = "DISKNAME_"
SECRET_WORDS = ("token", "password", "secret")


class ConfigError(Exception):
    """A configuration value is unknown, malformed, or cannot work here.

    Services raise it (or a subclass) when a resolved setting cannot be used,
    e.g. ``--source sim`` without ``--sim-hw``; the CLI prints it without a
    traceback and exits 2.
    """


def _field_types(cls: type[Any]) -> dict[str, Any]:
    hints = compat.type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _allowed(tp: Any) -> tuple[tuple[type, ...], bool]:
    """The concrete types a field accepts, and whether it may be None."""
    if compat.is_union(tp):
        args = typing.get_args(tp)
        return tuple(a for a in args if a is not type(None)), type(None) in args
    return (tp,), False


def _convert(value: Any, tp: Any, where: str, key: str) -> Any:
    kinds, optional = _allowed(tp)
    if value is None or (optional and value == ""):
        if optional:
            return None
        raise ConfigError(f"{where}: {key} must not be empty")
    for kind in kinds:
        converted = _as(kind, value)
        if converted is not _FAIL:
            return converted
    names = " or ".join(k.__name__ for k in kinds)
    raise ConfigError(f"{where}: {key} = {value!r} is not valid: expected {names}")


_FAIL = object()


def _as(kind: type, value: Any) -> Any:
    try:
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
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
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
    sections = {"agent", "host", "engine", "dev", "bench"}
    flat = {k: v for k, v in data.items() if k not in sections}
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
    fields = _field_types(cls)
    values: dict[str, Any] = {}
    if file is not None:
        for key, raw in load_file(file, section).items():
            if key not in fields:
                known = ", ".join(sorted(fields))
                raise ConfigError(f"{file}: unknown key {key!r} for {section} (known: {known})")
            values[key] = _convert(raw, fields[key], str(file), key)
    for key, raw in (env or {}).items():
        name = key[len(ENV_PREFIX) :].lower() if key.startswith(ENV_PREFIX) else ""
        if name in fields:
            values[name] = _convert(raw, fields[name], "environment", key)
    for key, raw in (flags or {}).items():
        values[key] = _convert(raw, fields[key], "command line", "--" + key.replace("_", "-"))
    return cls(**values)


def is_secret(key: str) -> bool:
    return any(word in key for word in SECRET_WORDS)


def _mask(key: str, value: Any) -> Any:
    if value is None:
        return None
    if is_secret(key):
        return "***"
    if key == "dsn" and isinstance(value, str) and "@" in value:
        scheme, _, rest = value.partition("://")
        userinfo, _, host = rest.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        return f"{scheme}://{user}:***@{host}" if has_password else value
    return str(value) if isinstance(value, Path) else value


def show(config: Any) -> dict[str, Any]:
    """The effective configuration as plain JSON, secrets masked."""
    return {f.name: _mask(f.name, getattr(config, f.name)) for f in dataclasses.fields(config)}
