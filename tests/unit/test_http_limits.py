"""Pure parts of the HTTP edge's defences: JSON depth, disk faults as answers, form bodies."""

from __future__ import annotations

import errno
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.http.errors import disk_fault
from service.http.request import MAX_JSON_DEPTH, json_depth


def nested(depth: int) -> object:
    value: object = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def test_json_depth_counts_containers() -> None:
    assert json_depth(1) == 0
    assert json_depth([]) == 1
    assert json_depth({"a": [1, {"b": []}]}) == 4
    assert json_depth(nested(MAX_JSON_DEPTH)) == MAX_JSON_DEPTH


def test_json_depth_needs_no_recursion_for_what_json_loads_accepted() -> None:
    deep = json.loads("[" * 900 + "]" * 900)
    assert json_depth(deep) == 900


@given(st.recursive(st.none() | st.integers(), lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=2), inner, max_size=3), max_leaves=20))
def test_json_depth_matches_a_recursive_definition(value: object) -> None:
    def depth(v: object) -> int:
        if isinstance(v, dict):
            return 1 + max((depth(c) for c in v.values()), default=0)
        if isinstance(v, list):
            return 1 + max((depth(c) for c in v), default=0)
        return 0

    assert json_depth(value) == depth(value)


@pytest.mark.parametrize(
    ("code", "status", "words"),
    [
        (errno.ENOSPC, 507, "data directory is full"),
        (errno.EDQUOT, 507, "data directory is full"),
        (errno.EROFS, 503, "read-only"),
        (errno.EACCES, 503, "permission denied"),
        (errno.EIO, 500, "write failed"),
    ],
)
def test_disk_faults_name_their_cause(code: int, status: int, words: str) -> None:
    fault = disk_fault(OSError(code, "x"))
    assert fault.status == status and words in fault.message
    assert "not saved" in fault.message
