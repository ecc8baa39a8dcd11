"""Object stores behind one small interface: S3 (boto3), GCS (google-cloud-storage), Azure Blob.

Keys are relative to the URL's prefix. Every SDK error becomes a storage.errors exception whose message
names the store (scheme://bucket/prefix, never the query or credentials) and has every credential value
scrubbed, because SDK messages sometimes quote what they were given (BK20, BK21).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import (
    Any,
    Protocol,
    TypeVar,
    runtime_checkable,
)
from urllib.parse import parse_qs, quote, urlsplit

from storage.errors import (
    BadRequest,
    NotFound,
    PermanentError,
    StowageError,
    TemporaryError,
)

T = TypeVar("T")

# Connections per store client: the engine's worker threads share one client, so the pool must not be smaller.
POOL_SIZE = 32


@runtime_checkable
class ObjectStore(Protocol):
    url: str

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> Iterator[str]: ...

    def delete(self, key: str) -> None: ...


@dataclass(frozen=True)
class StoreUrl:
    scheme: str  # "s3" | "gs" | "azblob"
    bucket: str
    prefix: str  # no leading/trailing "/", may be ""
    endpoint: str | None
    region: str | None

    @property
    def display(self) -> str:
        """What errors and logs show: no query string (it might one day carry a token)."""
        return f"{self.scheme}://{self.bucket}/{self.prefix}".rstrip("/")

    def full_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key


def parse_store_url(url: str) -> StoreUrl:
    parts = urlsplit(url)
    if parts.scheme not in ("s3", "gs", "azblob"):
        raise BadRequest(f"store: unsupported URL scheme {parts.scheme!r} (want s3://, gs:// or azblob://)")
    if not parts.netloc:
        raise BadRequest(f"store: {parts.scheme}:// URL names no bucket/container")
    if parts.fragment:
        raise BadRequest("store: a store URL has no #fragment (that is the backup id of a backup URL)")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"endpoint", "region"}
    if unknown:
        raise BadRequest(f"store: unknown URL parameter(s) {sorted(unknown)} (known: endpoint, region)")
    endpoint = query.get("endpoint") or None
    if endpoint and not endpoint.startswith(("http://", "https://")):
        raise BadRequest("store: endpoint must be an http:// or https:// URL")
    return StoreUrl(parts.scheme, parts.netloc, parts.path.strip("/"), endpoint, query.get("region") or None)


class _Redactor:
    def __init__(self, credentials: Mapping[str, str]) -> None:
        secrets: set[str] = set()
        for value in credentials.values():
            value = str(value)
            if len(value) >= 4:
                secrets.add(value)
                # Parts of a connection string or key file can be quoted on their own.
                for piece in value.replace(";", "\n").replace('"', "\n").splitlines():
                    piece = piece.split("=", 1)[1] if "=" in piece and piece.lower().startswith("accountkey") else piece
                    if len(piece.strip()) >= 16:
                        secrets.add(piece.strip())
        self._secrets = sorted(secrets, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


class _BaseStore:
    def __init__(self, url: str, parsed: StoreUrl, credentials: Mapping[str, str]) -> None:
        self.url = url
        self.parsed = parsed
        self._redact = _Redactor(credentials)

    def __repr__(self) -> str:  # never the credentials
        return f"<{type(self).__name__} {self.parsed.display}>"

    def _fail(self, cls: type[StowageError], what: str, exc: BaseException | str) -> StowageError:
        detail = self._redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        err = cls(f"{self.parsed.display}: {what}: {detail}")
        return err

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except StowageError:
            raise
        except Exception as exc:  # noqa: BLE001 - every SDK error is classified below
            raise self._classify(what, exc) from None

    def _classify(self, what: str, exc: BaseException) -> StowageError:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------- S3


class S3Store(_BaseStore):
    _PERMANENT_CODES = {"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                        "AllAccessDisabled", "InvalidBucketName", "AuthorizationHeaderMalformed",
                        "InvalidClientTokenId", "ExpiredToken", "InvalidToken", "AccountProblem"}

    def __init__(self, url: str, parsed: StoreUrl, credentials: Mapping[str, str]) -> None:
        super().__init__(url, parsed, credentials)
        import boto3
        from botocore.config import Config

        key_id = credentials.get("accessKeyID") or credentials.get("AWS_ACCESS_KEY_ID")
        secret = credentials.get("secretAccessKey") or credentials.get("AWS_SECRET_ACCESS_KEY")
        token = credentials.get("sessionToken") or credentials.get("AWS_SESSION_TOKEN")
        if bool(key_id) != bool(secret):
            raise BadRequest(f"{parsed.display}: credentials: accessKeyID and secretAccessKey go together")
        config = Config(max_pool_connections=POOL_SIZE, retries={"max_attempts": 4, "mode": "standard"},
                        connect_timeout=10, read_timeout=60,
                        s3={"addressing_style": "path"} if parsed.endpoint else {})
        session = boto3.session.Session(aws_access_key_id=key_id or None, aws_secret_access_key=secret or None,
                                        aws_session_token=token or None,
                                        region_name=parsed.region or credentials.get("region") or "us-east-1")
        self._s3 = session.client("s3", endpoint_url=parsed.endpoint, config=config)
        self._bucket = parsed.bucket

    def _classify(self, what: str, exc: BaseException) -> StowageError:
        from botocore.exceptions import (
            ClientError,
            HTTPClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )
        from botocore.exceptions import ConnectionError as BotoConnectionError

        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if code in self._PERMANENT_CODES or status in (400, 401, 403):
                if code == "NoSuchBucket":
                    return self._fail(PermanentError, what, f"bucket {self._bucket!r} does not exist")
                return self._fail(PermanentError, what, f"{code or status}: access refused (check the credentials)"
                                  if status in (401, 403) else f"{code}: {exc}")
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                return self._fail(NotFound, what, "no such object")
            return self._fail(TemporaryError, what, f"{code or status}: {exc}")
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return self._fail(PermanentError, what, "no usable credentials")
        if isinstance(exc, (BotoConnectionError, HTTPClientError, OSError)):
            return self._fail(TemporaryError, what, exc)
        return self._fail(PermanentError, what, exc)

    def put(self, key: str, data: bytes) -> None:
        self._call("put", lambda: self._s3.put_object(Bucket=self._bucket, Key=self.parsed.full_key(key), Body=data))

    def get(self, key: str) -> bytes:
        def fetch() -> bytes:
            return bytes(self._s3.get_object(Bucket=self._bucket, Key=self.parsed.full_key(key))["Body"].read())
        return self._call(f"get {key}", lambda: self._once_more(fetch))

    @staticmethod
    def _once_more(fn: Callable[[], T]) -> T:
        """fn, and once more right away if a pooled connection turned out closed (servers drop idle
        keep-alive connections; requests does not resend a POST by itself). Both calls are idempotent."""
        import requests

        try:
            return fn()
        except requests.exceptions.ConnectionError:
            return fn()

    def exists(self, key: str) -> bool:
        try:
            self._call("head", lambda: self._s3.head_object(Bucket=self._bucket, Key=self.parsed.full_key(key)))
            return True
        except NotFound:
            return False

    def list(self, prefix: str) -> Iterator[str]:
        full = self.parsed.full_key(prefix)
        strip = len(self.parsed.full_key(""))
        pages = self._call("list", lambda: iter(self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self._bucket, Prefix=full)))
        while True:
            page = self._call("list", lambda: next(pages, None))
            if page is None:
                return
            for obj in page.get("Contents", []):
                yield str(obj["Key"])[strip:]

    def delete(self, key: str) -> None:
        self._call("delete", lambda: self._s3.delete_object(Bucket=self._bucket, Key=self.parsed.full_key(key)))

    def check(self) -> None:
        self._call("open", lambda: self._s3.head_bucket(Bucket=self._bucket))


# --------------------------------------------------------------------------------------------------- GCS


class GcsStore(_BaseStore):
    def __init__(self, url: str, parsed: StoreUrl, credentials: Mapping[str, str]) -> None:
        super().__init__(url, parsed, credentials)
        from google.cloud import storage

        key_json = credentials.get("key.json")
        project = credentials.get("project")
        creds: Any
        if key_json:
            from google.oauth2 import service_account

            try:
                info = json.loads(key_json)
                creds = service_account.Credentials.from_service_account_info(
                    info, scopes=["https://www.googleapis.com/auth/devstorage.read_write"])
            except Exception:  # noqa: BLE001 - the parser's message may quote the key
                raise PermanentError(f"{parsed.display}: credentials: key.json is not a valid service-account "
                                     "key (JSON with type, client_email, private_key)") from None
            project = project or info.get("project_id")
        elif parsed.endpoint:
            from google.auth.credentials import AnonymousCredentials

            creds = AnonymousCredentials()
        else:
            raise PermanentError(f"{parsed.display}: credentials: key.json (a service-account key) is required")
        options = {"api_endpoint": parsed.endpoint} if parsed.endpoint else None
        self._client = storage.Client(project=project or "stowage", credentials=creds, client_options=options)
        self._widen_pool()
        self._bucket = self._client.bucket(parsed.bucket)
        self._api_base = (parsed.endpoint or "https://storage.googleapis.com").rstrip("/")

    def _widen_pool(self) -> None:
        # requests' default pool keeps 10 connections; more threads than that would reconnect every time.
        try:
            import requests.adapters

            http = self._client._http
            adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
            http.mount("https://", adapter)
            http.mount("http://", adapter)
        except Exception:  # noqa: BLE001 - only an optimisation
            pass

    def _classify(self, what: str, exc: BaseException) -> StowageError:
        from google.api_core import exceptions as gexc
        from google.auth import exceptions as authexc

        if isinstance(exc, gexc.NotFound):
            if "bucket" in str(exc).lower() and "does not exist" in str(exc).lower() or what in ("put", "open", "list"):
                return self._fail(PermanentError, what, f"bucket {self.parsed.bucket!r} does not exist")
            return self._fail(NotFound, what, "no such object")
        if isinstance(exc, (gexc.Unauthorized, gexc.Forbidden, authexc.GoogleAuthError)):
            return self._fail(PermanentError, what, f"access refused (check the credentials): {type(exc).__name__}")
        if isinstance(exc, (gexc.ServerError, gexc.TooManyRequests, gexc.RequestRangeNotSatisfiable)):
            return self._fail(TemporaryError, what, exc)
        if isinstance(exc, gexc.ClientError):
            return self._fail(PermanentError, what, exc)
        if isinstance(exc, OSError) or type(exc).__module__.startswith(("requests", "urllib3")):
            return self._fail(TemporaryError, what, exc)
        return self._fail(PermanentError, what, exc)

    def put(self, key: str, data: bytes) -> None:
        # A simple "uploadType=media" request through the client's authorized session: the SDK's own
        # upload_from_string sends small objects as multipart/related, which costs the server a MIME parse
        # (the gcp-storage-emulator manages ~27 MB/s at it, against ~150 MB/s for the plain body).
        from google.api_core.exceptions import from_http_response

        def send() -> None:
            response = self._client._http.post(
                f"{self._api_base}/upload/storage/v1/b/{quote(self.parsed.bucket, safe='')}/o",
                params={"uploadType": "media", "name": self.parsed.full_key(key)}, data=data,
                headers={"Content-Type": "application/octet-stream"}, timeout=(10, 120))
            if response.status_code >= 300:
                raise from_http_response(response)

        self._call("put", lambda: self._once_more(send))

    def get(self, key: str) -> bytes:
        # A media GET through the client's session, the body read in one call: the SDK's download_as_bytes
        # reads it in 8 KiB pieces (and checksums it again), which costs ~40% of restore throughput on 2 cores.
        # Chunks carry their own sha256 and manifests their own checksum, verified by the engine.
        from google.api_core.exceptions import from_http_response

        def fetch() -> bytes:
            response = self._client._http.get(
                f"{self._api_base}/download/storage/v1/b/{quote(self.parsed.bucket, safe='')}/o/"
                f"{quote(self.parsed.full_key(key), safe='')}", params={"alt": "media"}, stream=True,
                timeout=(10, 120))
            try:
                if response.status_code >= 300:
                    response.content  # noqa: B018 - from_http_response reads the error body
                    raise from_http_response(response)
                return bytes(response.raw.read(decode_content=True))
            finally:
                response.close()

        return self._call(f"get {key}", lambda: self._once_more(fetch))

    @staticmethod
    def _once_more(fn: Callable[[], T]) -> T:
        """fn, and once more right away if a pooled connection turned out closed (servers drop idle
        keep-alive connections; requests does not resend a POST by itself). Both calls are idempotent."""
        import requests

        try:
            return fn()
        except requests.exceptions.ConnectionError:
            return fn()

    def exists(self, key: str) -> bool:
        blob = self._bucket.blob(self.parsed.full_key(key))
        return bool(self._call("head", blob.exists))

    def list(self, prefix: str) -> Iterator[str]:
        strip = len(self.parsed.full_key(""))
        blobs = self._call("list", lambda: iter(self._client.list_blobs(self._bucket,
                                                                        prefix=self.parsed.full_key(prefix))))
        while True:
            blob = self._call("list", lambda: next(blobs, None))
            if blob is None:
                return
            yield str(blob.name)[strip:]

    def delete(self, key: str) -> None:
        blob = self._bucket.blob(self.parsed.full_key(key))
        try:
            self._call("delete", blob.delete)
        except PermanentError:
            if not blob.exists():  # emulators answer a 404 for a gone object; the bucket is there
                return
            raise

    def check(self) -> None:
        self._call("open", self._bucket.reload)


# ------------------------------------------------------------------------------------------------- Azure


class AzureStore(_BaseStore):
    def __init__(self, url: str, parsed: StoreUrl, credentials: Mapping[str, str]) -> None:
        super().__init__(url, parsed, credentials)
        from azure.storage.blob import BlobServiceClient, ExponentialRetry

        # The storage SDK's default retry waits 15 s, then 18 s, 24 s...: a dead endpoint would hold a worker for a
        # minute; callers retry TemporaryError with their own back-off, so a few quick tries are enough here.
        retry = ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=3, random_jitter_range=1)
        kwargs: dict[str, Any] = {"retry_policy": retry, "connection_timeout": 10, "read_timeout": 60,
                                  "max_single_put_size": 256 * 1024 * 1024}
        conn = credentials.get("connectionString")
        try:
            parts = dict(p.split("=", 1) for p in (conn or "").split(";") if "=" in p)
            if conn and parsed.endpoint and parts.get("AccountName") and parts.get("AccountKey"):
                # The URL's endpoint wins over the connection string's: the store URL says where backups are.
                service = BlobServiceClient(parsed.endpoint, credential={"account_name": parts["AccountName"],
                                                                         "account_key": parts["AccountKey"]},
                                            **kwargs)
            elif conn:
                service = BlobServiceClient.from_connection_string(conn, **kwargs)
            elif credentials.get("accountName") and credentials.get("accountKey"):
                name = credentials["accountName"]
                account_url = parsed.endpoint or f"https://{name}.blob.core.windows.net"
                service = BlobServiceClient(account_url, credential={"account_name": name,
                                                                     "account_key": credentials["accountKey"]},
                                            **kwargs)
            else:
                raise PermanentError(f"{parsed.display}: credentials: connectionString, or accountName and "
                                     "accountKey, are required")
        except StowageError:
            raise
        except Exception:  # noqa: BLE001 - the SDK's message may quote the connection string
            raise PermanentError(f"{parsed.display}: credentials: connectionString/accountKey is malformed") from None
        self._container = service.get_container_client(parsed.bucket)

    def _classify(self, what: str, exc: BaseException) -> StowageError:
        from azure.core import exceptions as aexc

        code = str(getattr(exc, "error_code", "") or "")
        status = int(getattr(getattr(exc, "response", None), "status_code", 0) or 0)
        if isinstance(exc, aexc.ResourceNotFoundError) or status == 404:
            if code == "ContainerNotFound" or what in ("put", "open", "list"):
                return self._fail(PermanentError, what, f"container {self.parsed.bucket!r} does not exist")
            return self._fail(NotFound, what, "no such object")
        if isinstance(exc, aexc.ClientAuthenticationError) or status in (401, 403):
            return self._fail(PermanentError, what, f"{code or status}: access refused (check the credentials)")
        if isinstance(exc, (aexc.ServiceRequestError, aexc.ServiceResponseError)) or status >= 500 or status == 429:
            return self._fail(TemporaryError, what, f"{code or status or type(exc).__name__}")
        if isinstance(exc, aexc.HttpResponseError):
            return self._fail(PermanentError, what, f"{code or status}")
        if isinstance(exc, OSError):
            return self._fail(TemporaryError, what, exc)
        return self._fail(PermanentError, what, exc)

    def put(self, key: str, data: bytes) -> None:
        self._call("put", lambda: self._container.upload_blob(self.parsed.full_key(key), data, overwrite=True,
                                                              max_concurrency=1))

    def get(self, key: str) -> bytes:
        return self._call(f"get {key}", lambda: bytes(
            self._container.download_blob(self.parsed.full_key(key), max_concurrency=1).readall()))

    def exists(self, key: str) -> bool:
        blob = self._container.get_blob_client(self.parsed.full_key(key))
        return bool(self._call("head", blob.exists))

    def list(self, prefix: str) -> Iterator[str]:
        strip = len(self.parsed.full_key(""))
        names = self._call("list", lambda: iter(self._container.list_blob_names(
            name_starts_with=self.parsed.full_key(prefix))))
        while True:
            name = self._call("list", lambda: next(names, None))
            if name is None:
                return
            yield str(name)[strip:]

    def delete(self, key: str) -> None:
        try:
            self._call("delete", lambda: self._container.delete_blob(self.parsed.full_key(key)))
        except NotFound:
            return

    def check(self) -> None:
        self._call("open", self._container.get_container_properties)


def open_store(url: str, credentials: Mapping[str, str]) -> ObjectStore:
    """An ObjectStore for ``url`` (s3://, gs://, azblob://) with a Secret's decoded data as credentials.

    Opening checks nothing over the network; the first call does, and a missing bucket or refused
    credentials surface there as PermanentError naming the store."""
    parsed = parse_store_url(url)
    credentials = {str(k): str(v) for k, v in (credentials or {}).items()}
    cls = {"s3": S3Store, "gs": GcsStore, "azblob": AzureStore}[parsed.scheme]
    return cls(url, parsed, credentials)  # type: ignore[abstract]
