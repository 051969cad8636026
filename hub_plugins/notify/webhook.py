"""People's chat webhooks (Slack incoming webhooks, Mattermost, anything that takes the same
``{"text": ...}`` POST): which URLs may be stored and called, what is sent, and what an answer
means (pure: tables in ``tests/unit/test_notify_webhook.py``; ``chat.post`` sends).

The URL is typed by a person, so the service must never call a host the admin did not name:
that is server-side request forgery (the hub's own API, a cloud's metadata address, anything
on the internal network). Only ``notifications.webhooks.allowed_hosts`` may be called, matched
exactly, and the URL is checked when it is stored and again before each POST (the list may have
changed since). Redirects are never followed: a redirect could lead anywhere.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

from .compose import Note

MAX_LENGTH = 2000
# the characters RFC 3986 allows in a URL: no whitespace, CR/LF, backslash (which browsers
# read as '/', but urllib does not: the two would disagree about the host), quotes or non-ASCII
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
DEFAULT_PORTS = {"https": 443, "http": 80}


def host_key(host: str, port: int | None, scheme: str) -> str:
    """How an allowed_hosts entry names this address: 'host', or 'host:port' for a port that is
    not the scheme's default (IPv6 in brackets, as in a URL)."""
    host = f"[{host}]" if ":" in host else host
    return host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"


def valid_webhook(text, allowed_hosts: list[str], require_https: bool = True) -> str:
    """The URL ("" means: no webhook), or ValueError saying what to change."""
    if not isinstance(text, str):
        raise ValueError("'webhook' must be text (a URL, or empty for no webhook).")
    text = text.strip()
    if not text:
        return ""
    allowed = [h.lower() for h in allowed_hosts]
    if not allowed:
        raise ValueError("This hub calls no webhooks: an admin must list the chat servers in "
                         "notifications.webhooks.allowed_hosts first. Leave 'webhook' empty.")
    schemes = ("https",) if require_https else ("https", "http")
    example = f"{schemes[0]}://{allowed[0]}/hooks/..."
    if len(text) > MAX_LENGTH:
        raise ValueError(f"'webhook' must be at most {MAX_LENGTH:,} characters (it has {len(text):,}).")
    if not _URL_CHARS.fullmatch(text):
        raise ValueError("'webhook' must be one URL of plain ASCII, without spaces, line breaks or "
                         f"backslashes, like {example}")
    try:
        parts = urlsplit(text)
        port = parts.port  # ValueError for a port that is not a number in 0-65535
    except ValueError:
        raise ValueError(f"'webhook' is not a URL: give one like {example}") from None
    if parts.scheme.lower() not in schemes:
        raise ValueError(f"'webhook' must start with {' or '.join(s + '://' for s in schemes)} (like {example}).")
    if "@" in parts.netloc:
        raise ValueError("'webhook' must not hold a user name or password before '@': the chat "
                         "server's URL carries its own secret in the path.")
    host = parts.hostname or ""
    key = host_key(host, port, parts.scheme.lower()) if host else ""
    if key not in allowed:
        raise ValueError(f"'webhook' must go to a host this hub allows: {', '.join(allowed)} "
                         f"(not '{key[:100]}'). Ask an admin to add yours to "
                         "notifications.webhooks.allowed_hosts.")
    return text


def shown(url: str) -> str:
    """A webhook as others (admins) see it: the host, not the secret in the path."""
    if not url:
        return ""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…"


def text_of(note: Note) -> str:
    return f"{note.subject}\n\n{note.body}"


def payload(note: Note) -> bytes:
    """What Slack's and Mattermost's incoming webhooks both take."""
    return json.dumps({"text": text_of(note)}).encode()


def verdict(code: int) -> str:
    """What an answer means: 'sent' (2xx); 'retry' when the chat server may take it later (it is
    down, slow, busy: 408, 429, 5xx, 599 for no answer); 'drop' otherwise (a redirect, which is
    never followed, or a 4xx: the webhook was deleted or refuses; asking again will not help)."""
    if 200 <= code < 300:
        return "sent"
    if code in (408, 429) or code >= 500:
        return "retry"
    return "drop"
