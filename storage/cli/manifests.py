"""Reading manifests: files, directories and stdin; multi-document YAML, JSON and List kinds."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from storage.api.limits import LimitExceeded, depth_message, json_depth_exceeds, load_yaml_all, yaml_problem
from storage.api.registry import ResourceInfo, by_kind

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(Exception):
    """A manifest that cannot be used; the message names the file and document."""


@dataclass(frozen=True)
class Manifest:
    source: str  # file name or "STDIN"
    index: int  # 1-based document number within the source
    obj: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{self.source} (document {self.index})"


def expand_paths(paths: Iterable[str], recursive: bool = False) -> list[str]:
    """Files to read, in order: a directory contributes its manifest files sorted by name."""
    out: list[str] = []
    for raw in paths:
        if raw == "-":
            out.append(raw)
            continue
        path = Path(raw)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(
                (p for p in path.glob(pattern) if p.is_file() and p.suffix in MANIFEST_SUFFIXES),
                key=lambda p: str(p.relative_to(path)),
            )
            if not found:
                raise ManifestError(f"no manifest files (*.yaml, *.yml, *.json) in directory {raw}")
            out.extend(str(p) for p in found)
        elif path.exists():
            out.append(raw)
        else:
            raise ManifestError(f'the path "{raw}" does not exist')
    return out


def parse_documents(text: str, source: str) -> list[Manifest]:
    """Every object in ``text``: JSON (one value) or YAML (``---``-separated), Lists flattened."""
    documents: list[Any]
    stripped = text.lstrip()
    if stripped.startswith("{") or stripped.startswith("["):
        if json_depth_exceeds(text.encode("utf-8")):  # the standard decoder recurses per level
            raise ManifestError(f"error parsing {source}: {depth_message()}")
        try:
            documents = [json.loads(text)]
        except json.JSONDecodeError:
            documents = _load_yaml(text, source)  # YAML flow style also starts with "{"
    else:
        documents = _load_yaml(text, source)
    out: list[Manifest] = []
    for index, doc in enumerate(documents, start=1):
        if doc is None:
            continue  # empty documents ("---" at the end) are allowed, as in kubectl
        for obj in _flatten(doc, source, index):
            out.append(Manifest(source, index, obj))
    return out


def _load_yaml(text: str, source: str) -> list[Any]:
    docs: list[Any] = []
    # Bounded: an alias bomb fails here, before it expands into something huge (and before it is sent).
    loader = load_yaml_all(text)
    index = 0
    while True:
        index += 1
        try:
            doc = next(loader)
        except StopIteration:
            return docs
        except LimitExceeded as exc:
            raise ManifestError(f"error parsing {source} (document {index}): {exc}") from None
        except yaml.YAMLError as exc:
            number, problem = yaml_problem(exc)
            line = f" line {number}" if number is not None else ""
            raise ManifestError(f"error parsing {source} (document {index}):{line} {problem}") from None
        docs.append(doc)


def _flatten(doc: Any, source: str, index: int) -> list[dict[str, Any]]:
    where = f"{source} (document {index})"
    if isinstance(doc, list):
        items = doc
    elif isinstance(doc, dict) and isinstance(doc.get("kind"), str) and doc["kind"].endswith("List") and "items" in doc:
        items = doc.get("items") or []
    else:
        items = [doc]
    out: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            raise ManifestError(f"error in {where}: expected an object, got {type(item).__name__}")
        if not item.get("kind"):
            raise ManifestError(f"error in {where}: Object 'Kind' is missing")
        if not item.get("apiVersion"):
            raise ManifestError(f"error in {where}: Object 'apiVersion' is missing")
        name = (item.get("metadata") or {}).get("name")
        if not name and not (item.get("metadata") or {}).get("generateName"):
            raise ManifestError(f"error in {where}: metadata.name: Required value")
        out.append(item)
    return out


def read_manifests(paths: Iterable[str], recursive: bool = False) -> list[Manifest]:
    out: list[Manifest] = []
    for path in expand_paths(paths, recursive):
        if path == "-":
            text, source = sys.stdin.read(), "STDIN"
        else:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise ManifestError(f"cannot read {path}: {exc.strerror}") from None
            except UnicodeDecodeError:
                raise ManifestError(f"cannot read {path}: not UTF-8 text") from None
            source = path
        out.extend(parse_documents(text, source))
    if not out:
        raise ManifestError("no objects passed to the command")
    return out


def resource_for(manifest: Manifest) -> ResourceInfo:
    """The served resource for a manifest's kind; its apiVersion may be a legacy one the server converts."""
    kind = manifest.obj.get("kind", "")
    api_version = manifest.obj.get("apiVersion", "")
    info = by_kind(kind)
    if info is None or not info.accepts(api_version):
        raise ManifestError(
            f'error in {manifest.where}: no matches for kind "{kind}" in version "{api_version}"'
        )
    return info
