"""The patch dialects as pure functions (the HTTP side is in test_crud.py)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.apiserver.patch import merge_patch, strategic_merge_patch

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=10,
)


def test_merge_patch_rfc7386_examples() -> None:
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert merge_patch({"a": "b"}, {"a": None}) == {}
    assert merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}
    assert merge_patch({}, {"a": {"bb": {"ccc": None}}}) == {"a": {"bb": {}}}


@given(st.dictionaries(st.text(max_size=3), json_values, max_size=4))
def test_merge_patch_with_itself_is_identity_on_null_free_documents(doc) -> None:
    def has_null(v) -> bool:
        if v is None:
            return True
        if isinstance(v, dict):
            return any(has_null(x) for x in v.values())
        if isinstance(v, list):
            return any(has_null(x) for x in v)
        return False

    if not has_null(doc):
        assert merge_patch(doc, doc) == doc


def test_strategic_merges_named_lists_and_honours_delete_directive() -> None:
    target = {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}], "x": [1, 2]}}
    patch = {"spec": {"containers": [{"name": "b", "image": "3"}, {"name": "c", "image": "4"}, {"name": "a", "$patch": "delete"}],
                      "x": [3], "$setElementOrder/containers": [{"name": "b"}]}}
    out = strategic_merge_patch(target, patch)
    assert out == {"spec": {"containers": [{"name": "b", "image": "3"}, {"name": "c", "image": "4"}], "x": [3]}}
    assert target["spec"]["containers"][0] == {"name": "a", "image": "1"}, "the target is not modified"


def test_strategic_replace_directive() -> None:
    assert strategic_merge_patch({"m": {"a": 1, "b": 2}}, {"m": {"$patch": "replace", "c": 3}}) == {"m": {"c": 3}}


@pytest.mark.parametrize("value", [1, "x", [1]])
def test_merge_patch_with_non_object_replaces(value) -> None:
    assert merge_patch({"a": 1}, value) == value
