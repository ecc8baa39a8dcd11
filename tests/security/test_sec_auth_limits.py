"""Failed authentications are rate-limited per client address (issue 8, item 6); valid requests are not
(SEMANTICS R7, proposed with this change)."""
from __future__ import annotations

from pathlib import Path

import httpx

from sec_authz_util import authz_server
from storage.apiserver.ratelimit import DEFAULT_BURST


def test_token_guessing_gets_429_and_valid_clients_keep_working(tmp_path: Path) -> None:
    with authz_server(tmp_path, {"alice": ()}) as srv:
        url = srv.url + "/api/v1/namespaces"
        with httpx.Client(timeout=30, verify=srv.server.verify()) as http:
            codes = [http.get(url, headers={"Authorization": f"Bearer guess-{i}"}).status_code
                     for i in range(DEFAULT_BURST)]
            assert codes == [401] * DEFAULT_BURST
            limited = http.get(url, headers={"Authorization": "Bearer guess-more"})
            assert limited.status_code == 429
            assert int(limited.headers["Retry-After"]) >= 1
            status = limited.json()
            assert status["reason"] == "TooManyRequests" and status["details"]["retryAfterSeconds"] >= 1
            assert "guess-more" not in limited.text  # the credential is never echoed
            assert http.get(url).status_code == 429  # no token at all is a failed authentication too
            # Same address, good credentials: served at once.
            ok = http.get(url, headers={"Authorization": f"Bearer {srv.server.token}"})
            assert ok.status_code == 200
            assert http.get(srv.url + "/api", headers={"Authorization": f"Bearer {srv.tokens['alice']}"}).status_code == 200
            assert http.get(srv.url + "/healthz").status_code == 200
