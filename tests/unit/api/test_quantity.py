"""Quantities: SEMANTICS Q1 (grammar), Q2 (canonical read-back)."""
from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, strategies as st
from pydantic import BaseModel, ValidationError

from storage.api.quantity import QUANTITY_ERROR, Quantity, canonical, format_quantity, parse_quantity, quantity_value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1Gi", 2**30), ("1G", 10**9), ("1Ki", 1024), ("1k", 1000), ("1Ei", 2**60), ("1E", 10**18),
        ("100m", Fraction(1, 10)), ("1n", Fraction(1, 10**9)), ("1u", Fraction(1, 10**6)),
        (".5Gi", 2**29), ("1.5Gi", 3 * 2**29), ("5.", 5), ("+3", 3), ("-1Mi", -(2**20)),
        ("1e3", 1000), ("1E-3", Fraction(1, 1000)), ("12e+2", 1200), (0, 0), (7, 7), (0.25, Fraction(1, 4)),
    ],
)
def test_q1_parse_exact_value(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("bad", ["1Gib", "1GB", "1gi", "1 Gi", "1K", "1ki", "", ".", "Gi", "e3", "1e", "1.2.3", "1iB", " 1", "1Gi ", "--1", True])
def test_q1_rejected_with_kubernetes_message(bad):
    with pytest.raises(ValueError) as exc:
        parse_quantity(bad)
    assert str(exc.value) == QUANTITY_ERROR
    assert "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'" in str(exc.value)


def test_q1_decimal_g_is_smaller_than_binary_gi():
    assert parse_quantity("1G") < parse_quantity("1Gi")
    assert parse_quantity("1000Mi") < parse_quantity("1Gi") < parse_quantity("1025Mi")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (".5Gi", "512Mi"), ("1.5Gi", "1536Mi"), ("1G", "1G"), ("1000Mi", "1000Mi"), ("1024Mi", "1Gi"),
        ("100m", "100m"), ("0.5", "500m"), ("1000M", "1G"), ("1500m", "1500m"), ("0.5Ki", "512"),
        ("0.1Ki", "102400m"), ("0", "0"), ("0Gi", "0"), ("-1Gi", "-1Gi"), ("1e3", "1e3"), ("1.5e3", "1500"),
        ("0.0000000001", "1n"), ("2048Ki", "2Mi"), ("1024Ei", "1024Ei"), (1, "1"), (0.25, "250m"), ("1000", "1k"),
    ],
)
def test_q2_canonical_form(text, expected):
    assert canonical(text) == expected


def test_format_quantity_families():
    assert format_quantity(2**30, prefer_binary=True) == "1Gi"
    assert format_quantity(10**9, prefer_binary=False) == "1G"
    assert format_quantity(1536 * 2**20, prefer_binary=True) == "1536Mi"
    assert format_quantity(Fraction(1, 2), prefer_binary=True) == "500m"
    assert format_quantity(3 * 10**9 + 1, prefer_binary=True) == "3000000001"


def test_quantity_value_rounds_up():
    assert quantity_value("1Gi") == 2**30
    assert quantity_value("100m") == 1
    assert quantity_value("1.5") == 2


def test_quantity_type_in_a_model_canonicalizes_and_rejects():
    class M(BaseModel):
        size: Quantity

    assert M(size=".5Gi").size == "512Mi"
    assert M(size=3).model_dump() == {"size": "3"}
    with pytest.raises(ValidationError) as exc:
        M(size="1GB")
    assert QUANTITY_ERROR in str(exc.value)


_SUFFIXES = ["", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "e3", "e-2", "E6"]
quantity_texts = st.builds(
    lambda sign, whole, frac, suffix: f"{sign}{whole}{'.' + frac if frac is not None else ''}{suffix}",
    st.sampled_from(["", "+", "-"]),
    st.integers(min_value=0, max_value=10**6).map(str),
    st.one_of(st.none(), st.text(alphabet="0123456789", min_size=0, max_size=6)),
    st.sampled_from(_SUFFIXES),
)


@given(quantity_texts)
def test_q2_canonical_is_idempotent_and_keeps_the_value(text):
    once = canonical(text)
    assert canonical(once) == once
    assert parse_quantity(once) == parse_quantity(text)


@given(st.integers(min_value=-(2**70), max_value=2**70), st.booleans())
def test_format_then_parse_round_trips_integers(value, binary):
    assert parse_quantity(format_quantity(value, prefer_binary=binary)) == value
