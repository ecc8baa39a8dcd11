"""A small stand-in for the Azure File service's share calls (Azurite has no File service).

It answers what the provisioner uses, with the real service's refusals:
create share (201; 409 ShareAlreadyExists; 400 InvalidHeaderValue for a quota
outside 1..102400 GiB; 400 InvalidResourceName for a bad share name), get
properties (200; 404 ShareNotFound), set quota (200; 404; 400) and delete
(202; 404 ShareNotFound). Requests without a SharedKey authorization for the
account, or without x-ms-version / x-ms-date, get 403 AuthenticationFailed.
"""
from __future__ import annotations

import datetime as dt
import re
import threading
import uuid
from dataclasses import dataclass, field
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

MIN_QUOTA, MAX_QUOTA = 1, 102400
SHARE_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")


@dataclass
class Share:
    quota: int
    metadata: dict[str, str]
    etag: str = field(default_factory=lambda: f'"0x{uuid.uuid4().hex[:15].upper()}"')
    modified: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))


class FileServiceFake:
    def __init__(self, account: str) -> None:
        self.account = account
        self.shares: dict[str, Share] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _handle(self) -> None:
                fake._dispatch(self)

            do_PUT = do_GET = do_HEAD = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{self.account}"

    def __enter__(self) -> "FileServiceFake":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    # -- answers
    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, status: int, headers: dict[str, str] | None = None,
                error: tuple[str, str] | None = None) -> None:
        body = b""
        h.send_response(status)
        if error is not None:
            body = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{error[0]}</Code>'
                    f"<Message>{error[1]}\nRequestId:{uuid.uuid4()}</Message></Error>").encode()
            h.send_header("x-ms-error-code", error[0])
            h.send_header("Content-Type", "application/xml")
        h.send_header("x-ms-request-id", str(uuid.uuid4()))
        h.send_header("x-ms-version", h.headers.get("x-ms-version", ""))
        h.send_header("Date", format_datetime(dt.datetime.now(dt.timezone.utc), usegmt=True))
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        url = urlparse(h.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = [p for p in url.path.split("/") if p]
        self.requests.append((h.command, h.path))
        length = int(h.headers.get("Content-Length") or 0)
        if length:
            h.rfile.read(length)
        auth = h.headers.get("Authorization", "")
        if (not auth.startswith(f"SharedKey {self.account}:") or not h.headers.get("x-ms-version")
                or not (h.headers.get("x-ms-date") or h.headers.get("Date"))):
            return self._reply(h, 403, error=("AuthenticationFailed", "Server failed to authenticate the request."))
        if parts[:1] != [self.account] or len(parts) != 2 or query.get("restype") != "share":
            return self._reply(h, 400, error=("UnsupportedHttpVerb", "This fake serves share calls only."))
        name = parts[1]
        with self.lock:
            share = self.shares.get(name)
            comp = query.get("comp")
            if h.command == "PUT" and comp is None:
                if not SHARE_NAME.match(name):
                    return self._reply(h, 400, error=("InvalidResourceName", "The specifed resource name contains invalid characters."))
                quota = self._quota(h)
                if quota is None:
                    return
                if share is not None:
                    return self._reply(h, 409, error=("ShareAlreadyExists", "The specified share already exists."))
                meta = {k[len("x-ms-meta-"):].lower(): v for k, v in h.headers.items() if k.lower().startswith("x-ms-meta-")}
                share = self.shares[name] = Share(quota or 5120, meta)
                return self._reply(h, 201, self._tags(share))
            if share is None:
                return self._reply(h, 404, error=("ShareNotFound", "The specified share does not exist."))
            if h.command in ("GET", "HEAD") and comp is None:
                headers = {**self._tags(share), "x-ms-share-quota": str(share.quota)}
                headers.update({f"x-ms-meta-{k}": v for k, v in share.metadata.items()})
                return self._reply(h, 200, headers)
            if h.command == "PUT" and comp == "properties":
                quota = self._quota(h)
                if quota is None:
                    return
                if quota:
                    share.quota = quota
                share.modified = dt.datetime.now(dt.timezone.utc)
                return self._reply(h, 200, self._tags(share))
            if h.command == "DELETE" and comp is None:
                del self.shares[name]
                return self._reply(h, 202)
        return self._reply(h, 400, error=("UnsupportedHttpVerb", "This fake serves share calls only."))

    def _quota(self, h: BaseHTTPRequestHandler) -> int | None:
        """0: not given; None: refused (the reply is sent)."""
        text = h.headers.get("x-ms-share-quota")
        if text is None:
            return 0
        if not text.isdigit() or not MIN_QUOTA <= int(text) <= MAX_QUOTA:
            self._reply(h, 400, {"x-ms-invalid-header-name": "x-ms-share-quota"},
                        error=("InvalidHeaderValue", "The value for one of the HTTP headers is not in the correct format."))
            return None
        return int(text)

    @staticmethod
    def _tags(share: Share) -> dict[str, str]:
        return {"ETag": share.etag, "Last-Modified": format_datetime(share.modified, usegmt=True)}
