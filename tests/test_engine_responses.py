"""A listing encoded in chunks is the same JSON as the list encoded at once."""

from __future__ import annotations

import orjson
import pytest

from diskname.engine.http.responses import LIST_CHUNK, json_list_response


@pytest.mark.parametrize("count", [0, 1, LIST_CHUNK, LIST_CHUNK + 1, 2 * LIST_CHUNK + 7])
def test_a_chunked_listing_reads_as_the_whole_list(count: int) -> None:
    items = [{"id": i, "name": f"vm-{i}", "tags": ["a", "é"]} for i in range(count)]
    response = json_list_response("vm", items, dict)
    assert response.content_type == "application/json"
    assert isinstance(response.body, bytes)
    assert orjson.loads(response.body) == {"vm": items}
