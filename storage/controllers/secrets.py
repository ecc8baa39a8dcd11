"""Handing Secrets to provisioners and attachers without giving them the store.

A cloud provisioner needs the account credentials a StorageClass (or, later,
its PV) refers to; the controllers own the store, so they pass this reader
(``ProvisionRequest.secrets`` and ``provisioners.base.secrets_available``).
"""
from __future__ import annotations

import base64
from typing import Any

from provisioners.base import ConfigMapReader, SecretReader
from storage.errors import NotFound


def store_secret_reader(store: Any) -> SecretReader:
    def read(namespace: str, name: str) -> dict[str, str] | None:
        try:
            secret = store.get("secrets", namespace, name)
        except NotFound:
            return None
        data = {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (secret.get("data") or {}).items()}
        data.update({k: str(v) for k, v in (secret.get("stringData") or {}).items()})
        return data

    return read


def store_config_map_reader(store: Any) -> ConfigMapReader:
    def read(namespace: str, name: str) -> dict[str, str] | None:
        try:
            config_map = store.get("configmaps", namespace, name)
        except NotFound:
            return None
        return {k: str(v) for k, v in (config_map.get("data") or {}).items()}

    return read
