"""Redact URLs and known secret values before they are logged, labelled, stored or sent.

- :func:`redact_url`: drop the userinfo (``user:pass@``), the query (``?X-Amz-Signature=…``) and the fragment; keep
  scheme, host, port and path — enough to say *which* file. With ``keep_path=False`` only scheme, host and port
  remain (for URLs whose path is the secret, such as Slack webhooks). A string without a scheme (a local path)
  is returned unchanged; an unparseable URL fails closed (``<unparseable URL>``), never echoed.
- :func:`redact_text`: free text (exception messages such as requests' ``404 … for url: http://u:p@…``): every
  ``scheme://…`` run is replaced by its redacted form, then every known secret value (and its percent-encoded
  forms) by ``***``.
- :class:`SecretFilter`: a :class:`logging.Filter` applying :func:`redact_text` to each record, its traceback
  included (attach it to handlers or to loggers such as pooch's).

Standard library only: yarl and httpx drop the parts too, but raise on or re-encode ``file:///`` and odd inputs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit, urlunsplit

URL_RUN = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
"""A ``scheme://…`` run inside free text (up to whitespace, a quote or a bracket)."""
MASK = "***"
_MIN_SECRET_CHARS = 6  # shorter "secrets" (a user name "ab") would mask ordinary words


def redact_url(url: str, keep_path: bool = True) -> str:
    """``url`` without userinfo, query and fragment (and without its path unless ``keep_path``)."""
    text = str(url).strip()
    if "://" not in text and not text.lower().startswith("file:"):
        return text  # a local path
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        netloc = host + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "<unparseable URL>"
    return urlunsplit((parts.scheme, netloc, parts.path if keep_path else "", "", ""))


def url_secrets(url: str) -> list[str]:
    """The secret parts of ``url`` (user name, password, query, its values, fragment, path) for :func:`redact_text`.

    The path is included because for some URLs (a Slack webhook) the path is the credential; callers that
    want to keep showing the path use :func:`redact_url` on it first.
    """
    try:
        parts = urlsplit(str(url).strip())
    except ValueError:
        return [str(url)]
    found = [parts.password or "", parts.username or "", parts.query, parts.fragment]
    found += [pair.partition("=")[2] for pair in parts.query.split("&")]
    return sorted({form for item in found if item for form in (item, unquote(item))})


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL redacted and every known secret (plain or percent-encoded) replaced by ``***``."""
    out = URL_RUN.sub(lambda match: redact_url(match.group(0)), str(text))
    for secret in sorted({s for s in secrets if s and len(s) >= _MIN_SECRET_CHARS}, key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            out = out.replace(form, MASK)
    return out


class SecretFilter(logging.Filter):
    """Redacts URLs and the given secrets in every record's message and traceback (never drops a record)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = list(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            # tracebacks are rendered later from exc_info: render and redact them now
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info), self.secrets)
            record.exc_info = None
        return True
