"""Request bodies sent as ``application/yaml``, read the way Kubernetes reads them.

Kubernetes turns a YAML body into JSON with sigs.k8s.io/yaml (``YAMLToJSON``,
on its go-yaml v2 fork) before its JSON decoder sees it. That conversion has
its own implicit types, neither PyYAML's YAML 1.1 nor YAML 1.2:

- booleans: ``true``/``false``, ``yes``/``no``, ``on``/``off``, ``y``/``n`` (in their
  three capitalisations); so an unquoted ``yes`` is a boolean, and a ConfigMap
  value written that way is refused by the decoder, as in Kubernetes;
- numbers: Go's integer syntax (``0777`` and ``0o777`` octal, ``0x1F``, ``0b101``,
  underscores ignored) and floats with or without a dot (``1e3``); no base 60
  (``1:20`` stays a string);
- timestamps stay the strings they were (go-yaml hands them to an interface
  value as text), never dates;
- map keys that are numbers or booleans become their text; a null key is refused;
- NaN and infinities cannot be JSON: refused.

Parsing is bounded as every YAML the server reads is (``storage.api.limits``):
nesting depth and alias expansion. Of a body with several documents only the
first is read, as go-yaml's ``Unmarshal`` reads it; the rest is not parsed.
"""
from __future__ import annotations

import math
import re
import struct
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.resolver import BaseResolver

from storage.api.limits import LimitExceeded, _Bounded, yaml_problem
from storage.errors import BadRequest

_NUMBER_TAG = "tag:stowage,2025:go-number"
_INT64 = (-(1 << 63), (1 << 63) - 1)
_UINT64_MAX = (1 << 64) - 1
# strconv.ParseInt(s, 0, 64)'s syntax (underscores removed first, as go-yaml does).
_GO_INT = re.compile(r"[-+]?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)\Z")
_GO_UINT = re.compile(r"(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)\Z")
# go-yaml v2's yamlStyleFloat.
_GO_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?\Z")
_SPECIAL_FLOATS = {
    **{s: math.inf for s in (".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF")},
    **{s: -math.inf for s in ("-.inf", "-.Inf", "-.INF")},
    **{s: math.nan for s in (".nan", ".NaN", ".NAN")},
}


class _GoResolver(BaseResolver):
    """go-yaml v2's implicit types for plain scalars."""

    yaml_implicit_resolvers: dict[Any, Any] = {}


_GoResolver.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$"),
    list("yYnNtTfFoO"))
_GoResolver.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])
_GoResolver.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])
# Anything that may be a number; the constructor decides, and keeps the text when it is none.
_GoResolver.add_implicit_resolver(_NUMBER_TAG, re.compile(r"^[-+.0-9]"), list("-+.0123456789"))


def _go_number(text: str) -> Any:
    """go-yaml v2's ``resolve`` for a plain scalar that starts like a number."""
    if text in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[text]
    plain = text.replace("_", "")
    if _GO_INT.match(plain):
        sign = -1 if plain.startswith("-") else 1
        digits = plain.lstrip("+-")
        if len(digits) > 1 and digits[0] == "0" and digits[1] in "xXoObB":
            value = int(digits[2:], {"x": 16, "o": 8, "b": 2}[digits[1].lower()])
        else:
            value = int(digits, 8 if len(digits) > 1 and digits[0] == "0" else 10)
        value *= sign
        if _INT64[0] <= value <= _INT64[1] or (_GO_UINT.match(plain) and value <= _UINT64_MAX):
            return value
    if _GO_FLOAT.match(plain):
        number = float(plain)
        if not math.isinf(number):  # strconv.ParseFloat's range error: go-yaml keeps the text
            return number
    return text


class _GoConstructor(SafeConstructor):
    def construct_go_number(self, node: yaml.ScalarNode) -> Any:
        return _go_number(self.construct_scalar(node))

    def construct_go_bool(self, node: yaml.ScalarNode) -> Any:
        text = str(self.construct_scalar(node)).lower()
        if text in ("y", "yes", "true", "on"):
            return True
        if text in ("n", "no", "false", "off"):
            return False
        raise ConstructorError(None, None, f"cannot decode !!str `{text}` as a !!bool", node.start_mark)

    def construct_go_timestamp(self, node: yaml.ScalarNode) -> Any:
        return self.construct_scalar(node)  # go-yaml gives an interface value the text (a "<<" value too)

    def construct_go_binary(self, node: yaml.ScalarNode) -> Any:
        return SafeConstructor.construct_yaml_binary(self, node).decode("utf-8", "replace")


_GoConstructor.add_constructor(_NUMBER_TAG, _GoConstructor.construct_go_number)
_GoConstructor.add_constructor("tag:yaml.org,2002:bool", _GoConstructor.construct_go_bool)
_GoConstructor.add_constructor("tag:yaml.org,2002:timestamp", _GoConstructor.construct_go_timestamp)
_GoConstructor.add_constructor("tag:yaml.org,2002:binary", _GoConstructor.construct_go_binary)
# "<<" anywhere but as a key (where it merges a mapping in) is the text itself.
_GoConstructor.add_constructor("tag:yaml.org,2002:merge", _GoConstructor.construct_go_timestamp)


if yaml.__with_libyaml__:
    from yaml.cyaml import CParser

    class _Loader(_Bounded, Composer, CParser, _GoConstructor, _GoResolver):  # type: ignore[misc]
        def __init__(self, stream: Any) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            _GoConstructor.__init__(self)
            _GoResolver.__init__(self)
            self._reset_bounds()
else:  # pragma: no cover - libyaml is part of the usual PyYAML wheels
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Loader(_Bounded, Reader, Scanner, Parser, Composer, _GoConstructor, _GoResolver):  # type: ignore[misc, no-redef]
        def __init__(self, stream: Any) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)
            Composer.__init__(self)
            _GoConstructor.__init__(self)
            _GoResolver.__init__(self)
            self._reset_bounds()


def _float_key(value: float) -> str:
    """strconv.FormatFloat(value, 'g', -1, 32), as sigs.k8s.io/yaml names a float map key."""
    if math.isnan(value):
        return ".nan"
    try:
        single = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:  # beyond float32: Go's conversion gives an infinity
        single = math.copysign(math.inf, value)
    if math.isinf(single):
        return ".inf" if single > 0 else "-.inf"
    if single == 0:
        return "-0" if math.copysign(1, single) < 0 else "0"
    text = f"{single:.8e}"
    for precision in range(9):  # the shortest text that reads back as the same float32
        text = f"{single:.{precision}e}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == single:
            break
    mantissa, exponent = text.split("e")
    sign = "-" if mantissa.startswith("-") else ""
    figures = mantissa.lstrip("-").replace(".", "").rstrip("0") or "0"
    point = int(exponent)
    if point < -4 or point >= 6:  # Go's %g threshold for the shortest form
        head = figures[0] + ("." + figures[1:] if len(figures) > 1 else "")
        return f"{sign}{head}e{'-' if point < 0 else '+'}{abs(point):02d}"
    if point < 0:
        return f"{sign}0.{'0' * (-point - 1)}{figures}"
    if len(figures) <= point + 1:
        return sign + figures + "0" * (point + 1 - len(figures))
    return f"{sign}{figures[:point + 1]}.{figures[point + 1:]}"


def _jsonable(value: Any, path: str = "") -> Any:
    """What sigs.k8s.io/yaml's conversion to JSON makes of a loaded value (or its refusal)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, str):
                name = key
            elif isinstance(key, bool):
                name = "true" if key else "false"
            elif isinstance(key, int):
                name = str(key)
            elif isinstance(key, float):
                name = _float_key(key)
            else:
                shown = "<nil>" if key is None else type(key).__name__
                raise ValueError(f"Unsupported map key of type: {shown}, key: {key!r}"
                                 + (f" (at {path})" if path else ""))
            out[name] = _jsonable(item, f"{path}.{name}" if path else name)
        return out
    if isinstance(value, list):
        return [_jsonable(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            shown = "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
            raise ValueError(f"json: unsupported value: {shown}" + (f" (at {path})" if path else ""))
        if value.is_integer() and _INT64[0] <= value <= _INT64[1]:
            return int(value)  # Go's JSON writes an integral float without a point: the decoder reads an integer
        return value
    if value is None or isinstance(value, (str, bool, int)):
        return value
    raise ValueError(f"a YAML value of type {type(value).__name__} has no JSON form" + (f" (at {path})" if path else ""))


def decode_yaml_body(body: bytes) -> Any:
    """The first YAML document of a request body as plain JSON values; ``BadRequest`` when it is not YAML."""
    if not body.strip():
        raise BadRequest("the request body is empty; send a YAML or JSON object")
    try:
        loader = _Loader(body)
        try:
            value = loader.get_data() if loader.check_data() else None
        finally:
            loader.dispose()
        return _jsonable(value)
    except LimitExceeded as e:
        raise BadRequest(f"the request body is not acceptable: {e}") from None
    except yaml.YAMLError as e:
        line, problem = yaml_problem(e)
        where = f"line {line}: " if line is not None else ""
        raise BadRequest(f"the request body is not valid YAML: yaml: {where}{problem}") from None
    except (ValueError, RecursionError) as e:
        raise BadRequest(f"error converting YAML to JSON: {e}") from None
