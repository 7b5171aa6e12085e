"""Credentials out of what others can read: URLs in flow-run parameters, logs, messages and exports.

A URL's password (``scheme://user:password@host``) is dropped, leaving ``scheme://user@host``, and the
value of a query parameter whose name is a secret's (``?token=...``, ``password``, ``api_key``, ``sig``...)
becomes ``***``. The host, port, path and user stay, so the redacted URL still says where something is.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SECRET_QUERY_NAMES = re.compile(
    r"(?i)^(password|passwd|pwd|pass|token|access_token|auth|authorization|api[_-]?key|apikey|key|"
    r"secret|client_secret|sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token|credentials?)$"
)
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@]*):[^\s/@]*@")


def redact_url(url: str) -> str:
    """``url`` without its password and with secret query values as ``***``; anything else unchanged."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO.sub(r"\g<head>@", url)
    netloc = parts.netloc
    if "@" in netloc:
        creds, host = netloc.rsplit("@", 1)
        netloc = f"{creds.split(':', 1)[0]}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(SECRET_QUERY_NAMES.match(k) for k, _ in pairs):
            query = urlencode([(k, "***" if SECRET_QUERY_NAMES.match(k) else v) for k, v in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url  # rebuilding could respell it (sqlite:////abs/path loses a slash)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def has_credentials(url: str) -> bool:
    """Whether redacting ``url`` changes it (it carries a password or a secret query value)."""
    return redact_url(url) != url


def redact_text(text: str) -> str:
    """Every ``scheme://user:password@`` in free text (a log line, an error message) without the password."""
    return _USERINFO.sub(r"\g<head>@", text)
