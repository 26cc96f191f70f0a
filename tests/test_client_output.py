"""The client never writes a control, bidi or zero-width character to a terminal raw (SPEC §19)."""

from __future__ import annotations

import io
import json

from diskname.client import output
from diskname.client.commands import ATTACHMENT_HEADERS, _attachment_rows

BAD = "\x1b[31mevil\x1b]0;title\x07\u202etxt.exe\u200b\u2066\ufeff\x85"


def test_a_table_cell_shows_every_unsafe_character_as_an_escape() -> None:
    out = io.StringIO()
    output.table(("VM", "STATUS"), [(BAD, "up")], out)
    text = out.getvalue()
    assert all(c == "\n" or (c.isprintable() and c not in "\u202e\u200b") for c in text)
    assert r"\x1b[31mevil\x1b]0;title\x07\u202etxt.exe\u200b\u2066\ufeff\x85" in text
    assert output.cell("Übersicht /dev/vdb") == "Übersicht /dev/vdb"  # printable text stays


def test_json_output_escapes_them_too() -> None:
    out = io.StringIO()
    output.as_json({"name": BAD}, out)
    assert out.getvalue().isascii() and json.loads(out.getvalue())["name"] == BAD


def test_a_shared_name_shows_as_a_conflict() -> None:
    att = {
        "id": "d1",
        "interface": "virtio",
        "active": True,
        "logical_name": None,
        "name_conflict": {"name": "/dev/vdb"},
        "disk": {"id": "d1"},
    }
    out = io.StringIO()
    output.table(ATTACHMENT_HEADERS, _attachment_rows([att]), out)
    assert "(conflict: /dev/vdb)" in out.getvalue()
