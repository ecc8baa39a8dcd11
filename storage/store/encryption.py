"""Encryption at rest for chosen resources, in Kubernetes' EncryptionConfiguration format.

    apiVersion: apiserver.config.k8s.io/v1
    kind: EncryptionConfiguration
    resources:
      - resources: [secrets]
        providers:
          - aesgcm:
              keys:
                - name: key1
                  secret: <base64 of 16, 24 or 32 random bytes>
          - identity: {}

The first provider writes; every listed provider reads. A value written by
``aesgcm`` is stored as ``k8s:enc:aesgcm:v1:<key name>:`` followed by the
base64 of a random 12-byte nonce and the AES-GCM ciphertext (Kubernetes
stores raw bytes there; the store's body column is text, hence base64). The
additional authenticated data is the object's key (resource/namespace/name),
so a ciphertext copied onto another object's row does not decrypt. A value
without the prefix is plaintext, readable only while ``identity`` is listed:
that is how a data dir from before encryption keeps working until its
Secrets are rewritten (``stowage rotate-secrets``).
"""
from __future__ import annotations

import base64
import os
import secrets as _secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage.errors import StowageError

API_VERSION = "apiserver.config.k8s.io/v1"
KIND = "EncryptionConfiguration"
PREFIX = "k8s:enc:"
AESGCM_PREFIX = "k8s:enc:aesgcm:v1:"
DEFAULT_CONFIG_FILE = "encryption-config.yaml"
_NONCE_BYTES = 12


class EncryptionConfigError(ValueError):
    """The configuration file is unreadable or not a valid EncryptionConfiguration."""


class DecryptionError(StowageError):
    """A stored value cannot be read with the configured providers. The message names no value."""


@dataclass
class _Resource:
    write_key: tuple[str, AESGCM] | None  # None: the first provider is identity (write plaintext)
    keys: dict[str, AESGCM] = field(default_factory=dict)
    identity: bool = False


class Encryption:
    """Seals and opens stored bodies of the configured resources; others pass through."""

    def __init__(self, resources: dict[str, _Resource]) -> None:
        self._resources = resources

    @property
    def resources(self) -> frozenset[str]:
        return frozenset(self._resources)

    def write_key_name(self, resource: str) -> str | None:
        spec = self._resources.get(resource)
        return spec.write_key[0] if spec is not None and spec.write_key is not None else None

    def seal(self, resource: str, namespace: str, name: str, body: str) -> str:
        spec = self._resources.get(resource)
        if spec is None or spec.write_key is None:
            return body
        key_name, aead = spec.write_key
        nonce = os.urandom(_NONCE_BYTES)
        sealed = aead.encrypt(nonce, body.encode(), _aad(resource, namespace, name))
        return f"{AESGCM_PREFIX}{key_name}:" + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, resource: str, namespace: str, name: str, stored: str) -> str:
        spec = self._resources.get(resource)
        if not stored.startswith(PREFIX):
            if spec is None or spec.identity:
                return stored
            raise DecryptionError(f'{resource} "{name}": stored unencrypted, and the encryption configuration '
                                  "lists no identity provider to read it", kind=resource, name=name)
        if not stored.startswith(AESGCM_PREFIX):
            raise DecryptionError(f'{resource} "{name}": stored with an unsupported provider '
                                  f'"{stored[len(PREFIX):].split(":", 1)[0]}"', kind=resource, name=name)
        key_name, sep, payload = stored[len(AESGCM_PREFIX):].partition(":")
        aead = spec.keys.get(key_name) if spec is not None else None
        if not sep or aead is None:
            raise DecryptionError(f'{resource} "{name}": encrypted with key "{key_name}", which the encryption '
                                  "configuration does not list", kind=resource, name=name)
        try:
            raw = base64.b64decode(payload, validate=True)
            return aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad(resource, namespace, name)).decode()
        except Exception:
            raise DecryptionError(f'{resource} "{name}": cannot decrypt with key "{key_name}" '
                                  "(wrong key or damaged value)", kind=resource, name=name) from None

    def is_current(self, resource: str, stored: str) -> bool:
        """Whether ``stored`` is already in the form the first provider writes."""
        spec = self._resources.get(resource)
        if spec is None:
            return True
        if spec.write_key is None:
            return not stored.startswith(PREFIX)
        return stored.startswith(f"{AESGCM_PREFIX}{spec.write_key[0]}:")


def _aad(resource: str, namespace: str, name: str) -> bytes:
    return f"/{resource}/{namespace}/{name}".encode()


def parse_config(document: Any) -> Encryption:
    if not isinstance(document, dict):
        raise EncryptionConfigError("expected a mapping")
    if document.get("kind") != KIND or document.get("apiVersion") not in (API_VERSION, "apiserver.config.k8s.io/v1beta1"):
        raise EncryptionConfigError(f"expected apiVersion: {API_VERSION} and kind: {KIND}")
    out: dict[str, _Resource] = {}
    for i, entry in enumerate(document.get("resources") or []):
        where = f"resources[{i}]"
        if not isinstance(entry, dict):
            raise EncryptionConfigError(f"{where}: expected a mapping")
        names = entry.get("resources") or []
        providers = entry.get("providers") or []
        if not names or not isinstance(names, list):
            raise EncryptionConfigError(f"{where}.resources: Required value")
        if not providers or not isinstance(providers, list):
            raise EncryptionConfigError(f"{where}.providers: Required value")
        spec = _Resource(write_key=None)
        for j, provider in enumerate(providers):
            pwhere = f"{where}.providers[{j}]"
            if not isinstance(provider, dict) or len(provider) != 1:
                raise EncryptionConfigError(f"{pwhere}: exactly one provider type per entry")
            (ptype, body), = provider.items()
            if ptype == "identity":
                spec.identity = True
                continue
            if ptype != "aesgcm":
                raise EncryptionConfigError(f'{pwhere}: unsupported provider "{ptype}": supported: aesgcm, identity')
            keys = (body or {}).get("keys") if isinstance(body, dict) else None
            if not keys or not isinstance(keys, list):
                raise EncryptionConfigError(f"{pwhere}.aesgcm.keys: Required value")
            for k, key in enumerate(keys):
                kwhere = f"{pwhere}.aesgcm.keys[{k}]"
                if not isinstance(key, dict) or not key.get("name") or not key.get("secret"):
                    raise EncryptionConfigError(f"{kwhere}: name and secret are required")
                key_name = str(key["name"])
                if ":" in key_name:
                    raise EncryptionConfigError(f"{kwhere}.name: must not contain ':'")
                try:
                    raw = base64.b64decode(str(key["secret"]), validate=True)
                except ValueError:
                    raise EncryptionConfigError(f"{kwhere}.secret: not valid base64") from None
                if len(raw) not in (16, 24, 32):
                    raise EncryptionConfigError(f"{kwhere}.secret: must be 16, 24 or 32 bytes, got {len(raw)}")
                if key_name in spec.keys:
                    raise EncryptionConfigError(f'{kwhere}.name: duplicate key name "{key_name}"')
                aead = AESGCM(raw)
                spec.keys[key_name] = aead
                if j == 0 and k == 0:
                    spec.write_key = (key_name, aead)
        for resource in names:
            # "secrets" and Kubernetes' group-qualified spelling ("secrets." for the core group) are one resource.
            out[str(resource).split(".", 1)[0]] = spec
    return Encryption(out)


def load_config(path: str | os.PathLike[str]) -> Encryption:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise EncryptionConfigError(f"{path}: {exc.strerror or exc}") from None
    try:
        return parse_config(yaml.safe_load(text))
    except yaml.YAMLError as exc:
        raise EncryptionConfigError(f"{path}: not valid YAML: {exc}") from None
    except EncryptionConfigError as exc:
        raise EncryptionConfigError(f"{path}: {exc}") from None


def new_config_text(key_name: str = "key1") -> str:
    """A configuration with one fresh 32-byte AES-GCM key for Secrets, plaintext still readable."""
    document = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "resources": [{
            "resources": ["secrets"],
            "providers": [
                {"aesgcm": {"keys": [{"name": key_name, "secret": base64.b64encode(_secrets.token_bytes(32)).decode()}]}},
                {"identity": {}},
            ],
        }],
    }
    return yaml.safe_dump(document, sort_keys=False)


def ensure_config(data_dir: str | os.PathLike[str]) -> Path:
    """The data dir's configuration file, created (0600, fresh key) when missing."""
    path = Path(data_dir) / DEFAULT_CONFIG_FILE
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return path
        with os.fdopen(fd, "w") as f:
            f.write(new_config_text())
    return path
