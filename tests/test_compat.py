"""diskname.compat: the stand-ins the agent uses on Python 3.9/3.10, tested here on 3.11.

Each stand-in is compared with the standard thing it replaces: the stdlib
JSON backend with orjson, the small TOML reader with tomllib, the asyncio
stand-ins with the behaviour of asyncio.timeout and asyncio.TaskGroup.
"""

from __future__ import annotations

import asyncio
import math
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from diskname import compat
from diskname.compat import _stdjson, aio, jsonlib, toml

json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def test_orjson_is_the_backend_where_it_is_installed() -> None:
    assert jsonlib.BACKEND == "orjson"
    assert jsonlib.dumps is orjson.dumps
    assert (_stdjson.OPT_SORT_KEYS, _stdjson.OPT_INDENT_2) == (
        orjson.OPT_SORT_KEYS,
        orjson.OPT_INDENT_2,
    )


@given(json_values)
def test_stdlib_json_writes_the_bytes_orjson_writes(value: object) -> None:
    assert _stdjson.dumps(value) == orjson.dumps(value)
    sorted_ = _stdjson.OPT_SORT_KEYS
    assert _stdjson.dumps(value, option=sorted_) == orjson.dumps(value, option=sorted_)
    assert _stdjson.loads(orjson.dumps(value)) == value


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_stdlib_json_floats_read_back_the_same(value: float) -> None:
    assert _stdjson.loads(_stdjson.dumps(value)) == orjson.loads(orjson.dumps(value))


@pytest.mark.parametrize(
    "line", [b"NaN", b"[Infinity]", b'{"a": -Infinity}', b'"\xff"', b"{} {}", b"{", b""]
)
def test_stdlib_json_refuses_what_orjson_refuses(line: bytes) -> None:
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(line)
    with pytest.raises(_stdjson.JSONDecodeError):
        _stdjson.loads(line)


def test_stdlib_json_cannot_write_what_is_not_json() -> None:
    for value in (math.nan, {1, 2}, "\ud800"):
        with pytest.raises(TypeError):
            _stdjson.dumps(value)
    assert _stdjson.dumps({1, 2}, default=sorted) == b"[1,2]"
    assert b'\n  "a": 1\n' in _stdjson.dumps({"a": 1}, option=_stdjson.OPT_INDENT_2)


keys = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
toml_scalars = (
    st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=["Cs"]), max_size=20)
)
toml_docs = st.dictionaries(
    keys, toml_scalars | st.dictionaries(keys, toml_scalars, max_size=4), max_size=6
)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # A JSON string is a TOML basic string, once DEL is escaped too.
        return orjson.dumps(value).decode().replace("\x7f", "\\u007f")
    return repr(value)


def _toml_text(doc: dict[str, object]) -> str:
    scalars = {k: v for k, v in doc.items() if not isinstance(v, dict)}
    lines = [f"{k} = {_toml_value(v)}  # a comment" for k, v in scalars.items()]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines += ["", f"[{name}]", *(f"{k}={_toml_value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


@given(toml_docs)
def test_the_small_toml_reader_agrees_with_tomllib(doc: dict[str, object]) -> None:
    text = _toml_text(doc)
    assert toml.subset_loads(text) == tomllib.loads(text) == doc


def test_the_small_toml_reader_reads_the_agent_files() -> None:
    text = "# the agent\n[agent]\nchannel = '/dev/vport0p1'\nreport_interval = 1_000\n"
    text += 'source = "sim\t\\u00e9"\n'

    assert toml.subset_loads(text) == tomllib.loads(text)


@pytest.mark.parametrize(
    "text",
    [
        "a = [1, 2]",
        "a = {b = 1}",
        'a = "\x7f"',
        r'a = "\/"',
        r'a = "\ud800"',
        "a.b = 1",
        'a = """x"""',
        "a = 1979-05-27",
        "a = 1 2",
        "[[t]]",
    ],
)
def test_the_small_toml_reader_refuses_what_it_does_not_know(text: str) -> None:
    with pytest.raises(toml.SubsetDecodeError, match="line 1"):
        toml.subset_loads(text)


def test_the_small_toml_reader_refuses_duplicates() -> None:
    with pytest.raises(toml.SubsetDecodeError, match="twice"):
        toml.subset_loads("a = 1\na = 2\n")


@dataclass(frozen=True, **compat.SLOTS)
class _Settings:
    path: Path | None = None
    count: int = 0
    name: str | float | None = None


def test_type_hints_read_unions_as_python_3_9_must() -> None:
    assert compat.type_hints(_Settings) == typing.get_type_hints(_Settings)
    namespace = {"Path": Path}
    assert compat._evaluate("Path | None", namespace) == (Path | None)
    assert compat._evaluate("str | float | None", namespace) == (str | float | None)
    assert compat._evaluate("dict[str, int]", namespace) == dict[str, int]
    assert compat.is_union(Path | None) and compat.is_union(typing.Union[Path, int])  # noqa: UP007
    assert not compat.is_union(Path)


async def test_backport_timeout_raises_timeout_error() -> None:
    with pytest.raises(TimeoutError):
        async with aio.backport_timeout(0.01):
            await asyncio.Event().wait()
    async with aio.backport_timeout(5):
        await asyncio.sleep(0)  # sync-ok: one yield to the loop, not a wait
    async with aio.backport_timeout(None):
        await asyncio.sleep(0)  # sync-ok: one yield to the loop, not a wait


async def test_backport_timeout_leaves_an_outside_cancel_a_cancel() -> None:
    started = asyncio.Event()

    async def body() -> None:
        async with aio.backport_timeout(30):
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(body())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_backport_taskgroup_waits_for_every_task() -> None:
    done: list[int] = []

    async def work(n: int) -> None:
        await asyncio.sleep(0)  # sync-ok: one yield to the loop, not a wait
        done.append(n)

    async with aio.BackportTaskGroup() as tg:
        for n in range(3):
            tg.create_task(work(n), name=f"work-{n}")
    assert sorted(done) == [0, 1, 2]


async def test_backport_taskgroup_a_failure_cancels_the_rest_and_is_raised() -> None:
    cancelled: list[str] = []

    async def forever(name: str) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    async def fail() -> None:
        await asyncio.sleep(0)  # sync-ok: one yield to the loop, not a wait
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        async with aio.BackportTaskGroup() as tg:
            tg.create_task(forever("sibling"))
            tg.create_task(fail())
            await forever("body")
    assert sorted(cancelled) == ["body", "sibling"]


async def test_backport_taskgroup_an_error_in_the_body_cancels_the_tasks() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    with pytest.raises(KeyError):
        async with aio.BackportTaskGroup() as tg:
            task = tg.create_task(forever())
            await asyncio.sleep(0)  # sync-ok: one yield to the loop, not a wait
            raise KeyError("body")
    assert task.cancelled()


async def test_backport_taskgroup_cancelled_from_outside_stays_cancelled() -> None:
    ready = asyncio.Event()
    inner: list[asyncio.Task[None]] = []

    async def forever() -> None:
        await asyncio.Event().wait()

    async def group() -> None:
        async with aio.BackportTaskGroup() as tg:
            inner.append(tg.create_task(forever()))
            ready.set()

    task = asyncio.create_task(group())
    await ready.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert inner[0].cancelled()
