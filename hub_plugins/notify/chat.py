"""Posting one message to a chat webhook (tornado's client, as the other services use)."""

from __future__ import annotations

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from .compose import Note
from .webhook import payload


async def post(url: str, note: Note, timeout: float) -> int:
    """POST the note; the answer's status, 599 when none came (refused, timed out, TLS)."""
    req = HTTPRequest(url, method="POST", body=payload(note), headers={"Content-Type": "application/json"},
                      follow_redirects=False, connect_timeout=timeout, request_timeout=timeout)
    try:
        resp = await AsyncHTTPClient().fetch(req, raise_error=False)
    except HTTPClientError as e:  # tornado's timeouts
        return e.code
    except OSError:  # refused, unreachable, name not found, TLS, connection closed
        return 599
    return resp.code
