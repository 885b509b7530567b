"""Keep secrets out of files: credentials inside URLs, key-like query parameters, header values.

    redact_url("http://u:sk-1@h/v1?api-key=k&v=2")  # "http://<redacted>@h/v1?api-key=<redacted>&v=2"
    redact({"url": ..., "headers": {...}, "notes": [...]})  # a redacted copy, for writing to disk

A URL's user info (`user:password@`, or a user name alone, which some services use as the key) is
replaced as a whole; a query parameter is redacted when its name, split at `-`, `_` and `.`, ends in
a secret word (api-key, api_key, key, token, access_token, sig, signature, secret, password,
auth, credential, X-Amz-Signature, client_secret, ...; case-insensitive). In `redact`, every URL
inside every string is redacted, and so is the value of a mapping key that names a secret
(`api_key`, `password`, `authorization`, ...) and every value under a `headers` mapping.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

REDACTED = "<redacted>"

_SECRET_WORDS = {
    "key", "apikey", "token", "sig", "signature", "secret", "password", "passwd", "pwd", "pass",
    "auth", "authorization", "credential", "credentials", "session",
}
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]+")


def is_secret_name(name: str) -> bool:
    """True for names like api-key, API_KEY, access_token, X-Amz-Signature, client_secret, sig."""
    parts = [p for p in re.split(r"[-_.]", name.lower()) if p]
    return bool(parts) and (parts[-1] in _SECRET_WORDS or "".join(parts) in _SECRET_WORDS)


def _redact_query(query: str) -> str:
    out = []
    for item in query.split("&"):
        name, sep, _ = item.partition("=")
        out.append(f"{name}={REDACTED}" if sep and is_secret_name(name) else item)
    return "&".join(out)


def redact_url(url: str) -> str:
    """`url` with its user info and the values of key-like query parameters replaced by <redacted>;
    anything else (and a string that is not a URL) comes back unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = REDACTED + "@" + netloc.rpartition("@")[2]
    query = _redact_query(parts.query) if parts.query else parts.query
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact(obj):
    """A copy of `obj` (dicts, lists, tuples, strings, scalars) safe to write to disk."""
    if isinstance(obj, str):
        return _URL.sub(lambda m: redact_url(m.group(0)), obj) if "://" in obj else obj
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(k, str) and k.lower() == "headers" and isinstance(v, dict):
                out[k] = {name: REDACTED for name in v}
            elif isinstance(k, str) and isinstance(v, str) and v and is_secret_name(k):
                out[k] = REDACTED
            else:
                out[k] = redact(v)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v) for v in obj)
    return obj
