"""The faster JSON paths keep the values and refusals of the slow ones (docs/semantics.md PF54)."""
from __future__ import annotations

import json

import pytest

from storage.api.limits import encoded_size, json_copy
from storage.api.timestamps import format_time, now
from storage.apiserver.fieldvalidation import FieldValidation
from storage.store.sql import _dumps, _loads

BODY = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-é", "labels": {"zone": "a"}},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "x": [1, 2.5, True, None, {"y": []}]}}


def test_json_copy_is_equal_and_private() -> None:
    """PF54: the copy equals the body and shares nothing with it."""
    copied = json_copy(BODY)
    assert copied == BODY
    copied["spec"]["x"][4]["y"].append(1)
    assert BODY["spec"]["x"][4]["y"] == []


def test_json_copy_falls_back_for_what_orjson_refuses() -> None:
    """PF54: integers past 64 bits are copied exactly (deepcopy), not refused."""
    big = {"n": 2**70, "l": [1, {"a": 2}]}
    copied = json_copy(big)
    assert copied == big and copied["n"] == 2**70
    copied["l"][1]["a"] = 3
    assert big["l"][1]["a"] == 2


def test_stored_form_is_compact_utf8_json_and_reads_back() -> None:
    """PF54: the store writes what json.dumps(separators=(",", ":"), ensure_ascii=False) wrote."""
    assert _dumps(BODY) == json.dumps(BODY, separators=(",", ":"), ensure_ascii=False)
    assert _loads(_dumps(BODY)) == BODY
    assert encoded_size(BODY) == len(json.dumps(BODY, separators=(",", ":"), ensure_ascii=False).encode())
    assert _loads(_dumps({"n": 2**70})) == {"n": 2**70}


@pytest.mark.parametrize("mode", ["Strict", "Warn", "Ignore"])
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(mode: str, constant: str) -> None:
    """PF54: refused on every fieldValidation mode, as orjson and Kubernetes' decoder refuse them."""
    with pytest.raises(ValueError, match="not a JSON value"):
        FieldValidation.from_query(mode).decode(f'{{"spec": {{"x": {constant}}}}}'.encode())


def test_now_is_the_current_second() -> None:
    """The once-a-second cache of now() never serves a stale second."""
    from datetime import datetime, timezone

    before = format_time(datetime.now(timezone.utc))
    stamp = now()
    after = format_time(datetime.now(timezone.utc))
    assert before <= stamp <= after
