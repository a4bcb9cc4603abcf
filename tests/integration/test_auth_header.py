"""The Authorization header as sent: bytes that are not UTF-8 are a wrong token (401), not a server error."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit


def test_auth_header_not_utf8_is_unauthorized(live) -> None:
    url = urlsplit(live.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.putrequest("GET", "/api/quote/AAPL")
        conn.putheader("Authorization", b"Bearer sc_\xff\xfe\xfd_secret")
        conn.endheaders()
        answer = conn.getresponse()
        body = answer.read()
    finally:
        conn.close()
    assert answer.status == 401
    assert b'"unauthorized"' in body
