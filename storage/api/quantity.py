"""Kubernetes resource quantities (SEMANTICS Q1-Q3).

Values are kept exact as ``Fraction`` so that ``1G < 1Gi`` and sums of many
capacities never drift. The canonical text form follows apimachinery's
``resource.Quantity``: the format family of the input (binary, decimal SI or
decimal exponent) is kept, precision below 1n is rounded up (away from zero),
and the largest suffix that represents the value exactly is chosen.
"""
from __future__ import annotations

import functools
import math
import re
from enum import Enum
from fractions import Fraction
from typing import TYPE_CHECKING, Annotated, Any

if TYPE_CHECKING:
    from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

__all__ = [
    "QUANTITY_ERROR",
    "Quantity",
    "QuantityFormat",
    "canonical",
    "format_quantity",
    "parse_quantity",
    "parse_quantity_with_format",
    "quantity_value",
]

# apimachinery's exact wording: users search for it.
QUANTITY_ERROR = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"

_NUMBER = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?")
_EXPONENT = re.compile(r"[eE]([+-]?[0-9]+)")

_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_BY_POWER = {0: "", 1: "Ki", 2: "Mi", 3: "Gi", 4: "Ti", 5: "Pi", 6: "Ei"}
_DECIMAL_BY_EXPONENT = {v: k for k, v in _DECIMAL.items()}
_NANO = 10**9


class QuantityFormat(str, Enum):
    BINARY_SI = "BinarySI"
    DECIMAL_SI = "DecimalSI"
    DECIMAL_EXPONENT = "DecimalExponent"


def _round_to_nano(value: Fraction) -> Fraction:
    """Round away from zero to a multiple of 1e-9, as apimachinery does on parse."""
    scaled = value * _NANO
    if scaled.denominator == 1:
        return value
    units = math.ceil(scaled) if scaled > 0 else math.floor(scaled)
    return Fraction(units, _NANO)


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> tuple[Fraction, QuantityFormat]:
    m = _NUMBER.match(text)
    if m is None:  # pragma: no cover - the pattern matches the empty string
        raise ValueError(QUANTITY_ERROR)
    sign, whole, frac = m.group(1), m.group(2), m.group(3)
    if not whole and not frac:
        raise ValueError(QUANTITY_ERROR)
    suffix = text[m.end():]
    digits = (whole or "0") + (frac or "")
    number = Fraction(int(digits), 10 ** len(frac or ""))
    if sign == "-":
        number = -number
    if suffix in _BINARY:
        value, fmt = number * (1 << _BINARY[suffix]), QuantityFormat.BINARY_SI
    elif suffix in _DECIMAL:
        value, fmt = number * Fraction(10) ** _DECIMAL[suffix], QuantityFormat.DECIMAL_SI
    else:
        e = _EXPONENT.fullmatch(suffix)
        if e is None:
            raise ValueError(QUANTITY_ERROR)
        exponent = int(e.group(1))
        if abs(exponent) > 1000:  # a guard against 1e999999999 eating memory
            raise ValueError(QUANTITY_ERROR)
        value, fmt = number * Fraction(10) ** exponent, QuantityFormat.DECIMAL_EXPONENT
    return _round_to_nano(value), fmt


def _coerce_text(s: str | int | float) -> str:
    if isinstance(s, bool):
        raise ValueError(QUANTITY_ERROR)
    if isinstance(s, int):
        return str(s)
    if isinstance(s, float):
        if not math.isfinite(s):
            raise ValueError(QUANTITY_ERROR)
        return repr(s)
    if isinstance(s, str):
        return s
    raise ValueError(QUANTITY_ERROR)


def parse_quantity_with_format(s: str | int | float) -> tuple[Fraction, QuantityFormat]:
    """The exact value in base units and the format family the input was written in."""
    return _parse(_coerce_text(s))


def parse_quantity(s: str | int | float) -> Fraction:
    """The exact value of a quantity in base units (bytes, cores, ...).

    Raises ``ValueError`` with apimachinery's message for text outside Q1's grammar.
    """
    return _parse(_coerce_text(s))[0]


def quantity_value(s: str | int | float) -> int:
    """The value as an integer, rounded up (``Quantity.Value()``): what a byte count needs."""
    return math.ceil(parse_quantity(s))


def _format(value: Fraction, fmt: QuantityFormat) -> str:
    value = _round_to_nano(value)
    if value == 0:
        return "0"
    if fmt is QuantityFormat.BINARY_SI:
        if -1024 < value < 1024 or value.denominator != 1:
            # Small or fractional binary values would need rounding: decimal shows them exactly.
            fmt = QuantityFormat.DECIMAL_SI
        else:
            amount, power = int(value), 0
            while power < 6 and amount % 1024 == 0:
                amount //= 1024
                power += 1
            return f"{amount}{_BINARY_BY_POWER[power]}"
    amount, exponent = int(value * _NANO), -9
    while amount % 10 == 0:
        amount //= 10
        exponent += 1
    shift = exponent % 3
    if shift:
        amount *= 10**shift
        exponent -= shift
    if fmt is QuantityFormat.DECIMAL_SI and exponent in _DECIMAL_BY_EXPONENT:
        return f"{amount}{_DECIMAL_BY_EXPONENT[exponent]}"
    return f"{amount}e{exponent}" if exponent else str(amount)


def format_quantity(value: Fraction | int | float | str, prefer_binary: bool = False) -> str:
    """Canonical text for a value in base units, binary (``Gi``) or decimal (``G``) family."""
    if isinstance(value, str):
        value = parse_quantity(value)
    elif isinstance(value, float):
        value = Fraction(repr(value))
    return _format(Fraction(value), QuantityFormat.BINARY_SI if prefer_binary else QuantityFormat.DECIMAL_SI)


@functools.lru_cache(maxsize=4096)
def _canonical_text(text: str) -> str:
    return _format(*_parse(text))


def canonical(s: str | int | float) -> str:
    """The form the API returns: ``.5Gi`` -> ``512Mi``, ``0.5`` -> ``500m``, ``1G`` stays ``1G``."""
    return _canonical_text(_coerce_text(s))


def _validate_quantity(v: Any) -> str:
    if isinstance(v, (str, int, float)):
        return canonical(v)
    raise ValueError(QUANTITY_ERROR)


# A quantity field: accepts str/int/float, stores and serializes the canonical string. Built on first
# use (PEP 562): the node agent parses quantities without importing pydantic (~5 MiB resident, PF42).
if TYPE_CHECKING:
    Quantity = Annotated[
        str,
        BeforeValidator(_validate_quantity),
        PlainSerializer(lambda v: v, return_type=str),
        WithJsonSchema({"type": "string", "pattern": r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"}),
    ]


def __getattr__(name: str) -> Any:
    if name != "Quantity":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

    quantity = Annotated[
        str,
        BeforeValidator(_validate_quantity),
        PlainSerializer(lambda v: v, return_type=str),
        WithJsonSchema({"type": "string", "pattern": r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"}),
    ]
    globals()["Quantity"] = quantity
    return quantity
