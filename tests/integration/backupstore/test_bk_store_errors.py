"""Listing, deleting and failing: the backup engine's catalogue and its errors (docs/semantics.md, BK)."""
from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from backupstore_support import MiB, sha256_file, write_random
from objectstore_servers import (
    S3_REGION,
    ObjectStoreTarget,
    drop_target,
    make_azure_target,
    running_moto_s3_process,
)

from storage.errors import BadRequest, NotFound, PermanentError, TemporaryError
from storage.system.backupstore import (
    backup_block,
    backup_url,
    delete_backup,
    list_backups,
    open_store,
    parse_backup_url,
    read_manifest,
    restore_block,
)


def test_bk_list_backups_and_handles(object_store_target, tmp_path: Path) -> None:
    """BK16, BK17: list_backups gives every complete backup oldest first with its labels; a backup's handle is
    STORE_URL#ID and parses back; a bad id is a BadRequest naming backup_id."""
    store = open_store(*object_store_target)
    assert list_backups(store) == []
    src = tmp_path / "src"
    write_random(src, MiB, seed=20)
    for i, name in enumerate(("zeta", "alpha", "mid")):
        backup_block(store, src, backup_id=name, labels={"n": str(i)})
    listed = list_backups(store)
    assert [m.id for m in listed] == ["zeta", "alpha", "mid"]
    assert [m.labels for m in listed] == [{"n": "0"}, {"n": "1"}, {"n": "2"}]
    assert listed[0].created <= listed[1].created <= listed[2].created
    assert read_manifest(store, "alpha") == listed[1]
    url = object_store_target.url
    assert backup_url(url, "alpha") == f"{url}#alpha"
    assert parse_backup_url(backup_url(url, "alpha")) == (url, "alpha")
    for bad in ("", "../x", "a/b", "-x", "x" * 300):
        with pytest.raises(BadRequest, match="backup_id"):
            backup_block(store, src, backup_id=bad)
    with pytest.raises(BadRequest, match="STORE_URL#BACKUP_ID"):
        parse_backup_url(url)
    with pytest.raises(NotFound, match="nope"):
        read_manifest(store, "nope")


def test_bk_delete_keeps_chunks_another_backup_uses(object_store_target, tmp_path: Path) -> None:
    """BK18: delete_backup removes the manifest, then only chunks no remaining backup names; the other backup
    still restores; deleting the last removes every chunk; deleting again (or a backup never made) succeeds."""
    store = open_store(*object_store_target)
    src = tmp_path / "src"
    write_random(src, 4 * MiB, seed=21)
    first, _ = backup_block(store, src, backup_id="one", chunk_size=MiB)
    write_random(src, MiB, seed=22, offset=2 * MiB)  # chunk 2 changes; 0, 1, 3 are shared
    second, stats = backup_block(store, src, backup_id="two", chunk_size=MiB)
    assert stats.chunks_uploaded == 1
    only_first = first.chunk_hashes() - second.chunk_hashes()
    assert len(only_first) == 1
    delete_backup(store, "one")
    remaining = {k.rsplit("/", 1)[-1] for k in store.list("chunks/")}
    assert remaining == second.chunk_hashes()
    assert [m.id for m in list_backups(store)] == ["two"]
    out = tmp_path / "out"
    with open(out, "wb") as f:
        f.truncate(4 * MiB)
    restore_block(store, "two", out)
    assert sha256_file(out) == sha256_file(src)
    delete_backup(store, "two")
    assert list(store.list("chunks/")) == [] and list(store.list("manifests/")) == []
    delete_backup(store, "two")
    delete_backup(store, "never-made")


def test_bk_missing_bucket_is_permanent_and_names_the_store(object_store_target, tmp_path: Path) -> None:
    """BK20: a bucket/container that does not exist is a PermanentError naming the store URL."""
    url, credentials = object_store_target
    gone = url.replace(object_store_target.bucket, "bk-does-not-exist-0000")
    store = open_store(gone, credentials)
    src = tmp_path / "src"
    write_random(src, MiB, seed=23)
    with pytest.raises(PermanentError, match="bk-does-not-exist-0000.*does not exist") as caught:
        backup_block(store, src, backup_id="x")
    assert not isinstance(caught.value, TemporaryError)


def test_bk_unreachable_store_is_temporary(object_store_target, tmp_path: Path) -> None:
    """BK20: a store nobody answers at is a TemporaryError (retry later), naming the store URL."""
    url, credentials = object_store_target
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    dead = url.replace(object_store_target.endpoint.split("//")[1].split("/")[0], f"127.0.0.1:{dead_port}")
    assert dead != url
    store = open_store(dead, credentials)
    with pytest.raises(TemporaryError, match=object_store_target.bucket):
        store.put("probe", b"x")


def test_bk_s3_bad_credentials_are_refused_without_the_secret() -> None:
    """BK21: a wrong S3 secret (moto with authentication on) is a PermanentError saying access was refused and
    naming the store, and neither the secret nor the key id's secret shows in the message."""
    # moto checks signatures once INITIAL_NO_AUTH_ACTION_COUNT actions have run: 3 set up a user.
    with running_moto_s3_process({"INITIAL_NO_AUTH_ACTION_COUNT": "3"}) as endpoint:
        import boto3

        iam = boto3.client("iam", endpoint_url=endpoint, region_name=S3_REGION, aws_access_key_id="setup",
                           aws_secret_access_key="setup")
        iam.create_user(UserName="backup")
        iam.put_user_policy(UserName="backup", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="backup")["AccessKey"]
        good = {"accessKeyID": key["AccessKeyId"], "secretAccessKey": key["SecretAccessKey"]}
        boto3.client("s3", endpoint_url=endpoint, region_name=S3_REGION, aws_access_key_id=good["accessKeyID"],
                     aws_secret_access_key=good["secretAccessKey"]).create_bucket(Bucket="bk-auth-bucket")
        url = f"s3://bk-auth-bucket/p?endpoint={endpoint}"
        # Objects only: moto's signature check miscomputes a ListObjects whose prefix holds "/" (real S3 does not).
        good_store = open_store(url, good)
        good_store.put("probe", b"ok")  # the right secret works
        assert good_store.get("probe") == b"ok"
        secret = "wrong-Secret-Value-0123456789abcdef"
        bad = {"accessKeyID": key["AccessKeyId"], "secretAccessKey": secret}
        with pytest.raises(PermanentError) as caught:
            open_store(url, bad).put("probe", b"x")
        message = str(caught.value)
        assert "s3://bk-auth-bucket/p" in message and "access refused" in message
        assert secret not in message and key["SecretAccessKey"] not in message
        assert "endpoint=" not in message


@pytest.fixture
def azure_target(azurite) -> Iterator[ObjectStoreTarget]:
    target = make_azure_target(azurite)
    try:
        yield target
    finally:
        drop_target(target, azurite)


def test_bk_azure_bad_key_is_refused_without_the_secret(azure_target: ObjectStoreTarget, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture,
                                                        capfd: pytest.CaptureFixture[str]) -> None:
    """BK21, BK28: a wrong Azure account key (Azurite checks SharedKey signatures) is a PermanentError naming the
    container's URL, without the key; no log line (the SDK's at DEBUG included) or output carries the key."""
    object_store_target = azure_target
    import base64
    import logging

    caplog.set_level(logging.DEBUG)

    wrong_key = base64.b64encode(b"w" * 64).decode()
    endpoint = object_store_target.endpoint
    creds = {"accountName": "devstoreaccount1", "accountKey": wrong_key}
    url = f"azblob://{object_store_target.bucket}/backups?endpoint={endpoint}"
    with pytest.raises(PermanentError) as caught:
        open_store(url, creds).put("probe", b"x")
    message = str(caught.value)
    assert f"azblob://{object_store_target.bucket}/backups" in message and "access refused" in message
    assert wrong_key not in message and wrong_key[:20] not in message
    conn = object_store_target.credentials["connectionString"].replace(
        object_store_target.credentials["connectionString"].split("AccountKey=")[1].split(";")[0], wrong_key)
    with pytest.raises(PermanentError) as caught:
        open_store(url, {"connectionString": conn}).put("probe", b"x")
    assert wrong_key not in str(caught.value) and "access refused" in str(caught.value)
    # and a backup that works logs nothing secret either
    good = object_store_target.credentials
    src = tmp_path / "src"
    write_random(src, MiB, seed=25)
    backup_block(open_store(object_store_target.url, good), src, backup_id="logged")
    real_key = good["connectionString"].split("AccountKey=")[1].split(";")[0]
    captured = capfd.readouterr()
    for text in (caplog.text, captured.out, captured.err):
        assert wrong_key not in text and real_key not in text
    assert "backup written" in captured.out + caplog.text


def test_bk_bad_credential_shapes_are_clear(object_store_target) -> None:
    """BK21, BK22: credentials that cannot work (a half S3 pair, a GCS key.json that is not a key, Azure without
    a key) fail when the store is opened, saying which keys are expected and quoting none of the values."""
    kind, bucket = object_store_target.kind, object_store_target.bucket
    secret = "-----BEGIN PRIVATE KEY-----supersecretvalue"
    if kind == "s3":
        url, creds, expected = f"s3://{bucket}/p", {"secretAccessKey": secret}, "accessKeyID and secretAccessKey"
        exc: type[Exception] = BadRequest
    elif kind == "gcs":
        url, creds, expected = f"gs://{bucket}/p", {"key.json": '{"private_key": "' + secret}, "key.json"
        exc = PermanentError
    else:
        url, creds, expected = f"azblob://{bucket}/p", {"accountName": "x"}, "accountKey"
        exc = PermanentError
    with pytest.raises(exc, match=expected) as caught:
        open_store(url, creds)
    assert secret not in str(caught.value) and "supersecret" not in str(caught.value)


def test_bk_store_url_mistakes_are_bad_requests() -> None:
    """BK19: a URL of another scheme, without a bucket, with an unknown parameter or a non-HTTP endpoint is a
    BadRequest saying what is wrong."""
    cases = {"ftp://b/p": "scheme", "s3:///p": "no bucket", "s3://b/p?foo=1": "unknown URL parameter",
             "gs://b/p?endpoint=localhost:1": "endpoint", "s3://b/p#id": "fragment"}
    for url, reason in cases.items():
        with pytest.raises(BadRequest, match=reason):
            open_store(url, {})
