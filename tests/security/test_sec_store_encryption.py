"""Secrets encrypted at rest in the store, on SQLite and PostgreSQL (issue 8, item 5).

Every check reads the raw database rows behind the store's back: the
objects table and the events table (the watch history) must never hold a
Secret in plaintext, while get, list and watch return it decrypted.
"""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, text

from storage.store.encryption import DecryptionError, parse_config
from storage.store.sql import SqlStore

VALUE = "hunter2-very-secret-value"
ENCODED = base64.b64encode(VALUE.encode()).decode()


def _config(*keys: tuple[str, bytes], identity: bool = True) -> Any:
    providers: list[dict[str, Any]] = []
    if keys:
        providers.append({"aesgcm": {"keys": [{"name": n, "secret": base64.b64encode(k).decode()} for n, k in keys]}})
    if identity:
        providers.append({"identity": {}})
    return parse_config({"apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
                         "resources": [{"resources": ["secrets"], "providers": providers}]})


KEY1 = ("key1", bytes(range(32)))
KEY2 = ("key2", bytes(range(100, 132)))


def _secret(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"},
            "type": "Opaque", "data": {"password": ENCODED}}


def _raw(store_url: str, table: str, resource: str = "secrets") -> list[str]:
    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(text(f"SELECT body FROM {table} WHERE resource = :r"), {"r": resource})]
    finally:
        engine.dispose()


def _assert_sealed(store_url: str, key_name: str, tables: tuple[str, ...] = ("stowage_objects", "stowage_events")) -> None:
    for table in tables:
        bodies = _raw(store_url, table)
        assert bodies, table
        for body in bodies:
            assert body.startswith(f"k8s:enc:aesgcm:v1:{key_name}:"), (table, body[:40])
            assert VALUE not in body and ENCODED not in body


def test_secrets_are_sealed_in_rows_and_events_and_read_back_decrypted(store_url: str) -> None:
    store = SqlStore(store_url, encryption=_config(KEY1))
    try:
        _, start = store.list("secrets")
        created = store.create("secrets", _secret("db"))
        updated = store.update("secrets", {**created, "data": {"password": ENCODED, "user": ENCODED}})
        store.create("configmaps", {"metadata": {"name": "plain", "namespace": "default"}, "data": {"k": "v"}})
        _assert_sealed(store_url, "key1")
        assert _raw(store_url, "stowage_objects", "configmaps")[0].startswith("{")  # only Secrets are encrypted

        assert store.get("secrets", "default", "db")["data"] == {"password": ENCODED, "user": ENCODED}
        items, _ = store.list("secrets", "default")
        assert [o["data"]["user"] for o in items] == [ENCODED]
        with store.watch("secrets", since=start) as watcher:  # the watch carries decrypted objects
            events = [watcher.get(timeout=30) for _ in range(2)]
        assert [(e.type, e.object["data"]) for e in events if e] == [
            ("ADDED", {"password": ENCODED}), ("MODIFIED", {"password": ENCODED, "user": ENCODED})]
        deleted = store.delete("secrets", "default", "db")
        assert deleted["metadata"]["resourceVersion"] != updated["metadata"]["resourceVersion"]
        assert _raw(store_url, "stowage_objects") == []
        _assert_sealed(store_url, "key1", ("stowage_events",))  # the DELETED event's body too
    finally:
        store.close()


def test_rotation_rewrites_every_secret_with_the_first_key(store_url: str) -> None:
    old = SqlStore(store_url, encryption=_config(KEY1))
    try:
        rv = old.create("secrets", _secret("a"))["metadata"]["resourceVersion"]
        old.create("secrets", _secret("b"))
    finally:
        old.close()

    # Step 2 of a rotation: the new key first, the old one still listed: both read, the new one writes.
    rotating = SqlStore(store_url, encryption=_config(KEY2, KEY1))
    try:
        assert rotating.get("secrets", "default", "a")["data"]["password"] == ENCODED
        rotating.create("secrets", _secret("c"))
        assert rotating.rewrite_encrypted() == 2
        assert rotating.rewrite_encrypted() == 0  # idempotent
        assert rotating.get("secrets", "default", "a")["metadata"]["resourceVersion"] == rv  # content unchanged
    finally:
        rotating.close()
    _assert_sealed(store_url, "key2")

    # Step 4: the old key removed; everything, history included, still reads.
    rotated = SqlStore(store_url, encryption=_config(KEY2, identity=False))
    try:
        assert sorted(o["metadata"]["name"] for o in rotated.list("secrets")[0]) == ["a", "b", "c"]
        with rotated.watch("secrets", since=0) as watcher:
            assert watcher.get(timeout=30) is not None
    finally:
        rotated.close()

    # A store that only knows the retired key cannot read, and says which key it lacks, never a value.
    stale = SqlStore(store_url, encryption=_config(KEY1))
    try:
        with pytest.raises(DecryptionError) as err:
            stale.get("secrets", "default", "a")
        assert 'key "key2"' in err.value.message and ENCODED not in err.value.message
    finally:
        stale.close()


def test_plaintext_secrets_from_before_encryption_stay_readable_until_rewritten(store_url: str) -> None:
    legacy = SqlStore(store_url)  # a data dir from before encryption at rest
    try:
        legacy.create("secrets", _secret("old"))
    finally:
        legacy.close()
    assert ENCODED in _raw(store_url, "stowage_objects")[0]

    without_identity = SqlStore(store_url, encryption=_config(KEY1, identity=False))
    try:
        with pytest.raises(DecryptionError):
            without_identity.get("secrets", "default", "old")
    finally:
        without_identity.close()

    upgraded = SqlStore(store_url, encryption=_config(KEY1))
    try:
        assert upgraded.get("secrets", "default", "old")["data"]["password"] == ENCODED
        assert upgraded.rewrite_encrypted() == 1
        assert upgraded.get("secrets", "default", "old")["data"]["password"] == ENCODED
    finally:
        upgraded.close()
    _assert_sealed(store_url, "key1")


def test_a_sealed_value_moved_to_another_secret_does_not_decrypt(store_url: str) -> None:
    store = SqlStore(store_url, encryption=_config(KEY1))
    try:
        store.create("secrets", _secret("victim"))
        store.create("secrets", _secret("mine"))
        engine = create_engine(store_url)
        try:
            with engine.begin() as conn:
                body = conn.execute(text("SELECT body FROM stowage_objects WHERE name = 'victim'")).scalar_one()
                conn.execute(text("UPDATE stowage_objects SET body = :b WHERE name = 'mine'"), {"b": body})
        finally:
            engine.dispose()
        with pytest.raises(DecryptionError):  # the object's key is authenticated with the value
            store.get("secrets", "default", "mine")
    finally:
        store.close()


def test_config_file_format_and_default_key_file(tmp_path: Path) -> None:
    from storage.store.encryption import EncryptionConfigError, ensure_config, load_config

    path = ensure_config(tmp_path)
    assert (path.stat().st_mode & 0o777) == 0o600
    document = yaml.safe_load(path.read_text())
    assert document["kind"] == "EncryptionConfiguration"
    assert document["resources"][0]["providers"][1] == {"identity": {}}
    assert len(base64.b64decode(document["resources"][0]["providers"][0]["aesgcm"]["keys"][0]["secret"])) == 32
    assert ensure_config(tmp_path) == path and yaml.safe_load(path.read_text()) == document  # never replaced
    assert load_config(path).write_key_name("secrets") == "key1"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**document, "resources": [{"resources": ["secrets"], "providers": [
        {"aesgcm": {"keys": [{"name": "k", "secret": base64.b64encode(b"short").decode()}]}}]}]}))
    with pytest.raises(EncryptionConfigError, match="must be 16, 24 or 32 bytes"):
        load_config(bad)


def test_rotate_secrets_command_encrypts_an_upgraded_data_dir_then_rotates(tmp_path: Path) -> None:
    import subprocess

    from support import stowage_executable

    from storage.store.encryption import load_config

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    url = f"sqlite:///{data_dir / 'stowage.db'}"
    legacy = SqlStore(url)  # written before encryption at rest existed
    try:
        legacy.create("secrets", _secret("old"))
    finally:
        legacy.close()

    def rotate(*extra: str) -> str:
        result = subprocess.run([stowage_executable(), "rotate-secrets", "--data-dir", str(data_dir), *extra],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "rewrote 1 object(s)" in rotate()
    assert (data_dir / "encryption-config.yaml").exists()
    _assert_sealed(url, "key1")

    document = yaml.safe_load((data_dir / "encryption-config.yaml").read_text())
    providers = document["resources"][0]["providers"]
    providers[0]["aesgcm"]["keys"].insert(0, {"name": "key2", "secret": base64.b64encode(bytes(32)).decode()})
    rotated = tmp_path / "rotated.yaml"
    rotated.write_text(yaml.safe_dump(document))
    assert "rewrote 1 object(s)" in rotate("--encryption-provider-config", str(rotated))
    _assert_sealed(url, "key2")
    store = SqlStore(url, encryption=load_config(rotated))
    try:
        assert store.get("secrets", "default", "old")["data"]["password"] == ENCODED
    finally:
        store.close()
