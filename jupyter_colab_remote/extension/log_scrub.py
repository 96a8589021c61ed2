"""Keep tokens out of logs: a filter that masks them in every record tornado or Jupyter writes."""

from __future__ import annotations

import logging
import re

_QUERY_TOKEN = re.compile(r"(?i)([?&;]token=)[^&\s'\"#]+")
#: The same inside a URL-encoded URL (http-over-ws's auth_url parameter).
_ENCODED_TOKEN = re.compile(r"(?i)((?:%3F|%26|%3B)token%3D)[0-9a-z._~+-]+")
_AUTH_HEADER = re.compile(r"(?i)\b(token|bearer)(\s+|%20)[0-9a-z._~+/=-]{16,}")
#: Loggers that can print a request URI: tornado's access, error and general logs.
TORNADO_LOGGERS = ("tornado.access", "tornado.application", "tornado.general")


def scrub(text: str) -> str:
    """Replace token values in URLs and Authorization headers by `[secret]`."""
    text = _QUERY_TOKEN.sub(r"\1[secret]", text)
    text = _ENCODED_TOKEN.sub(r"\1[secret]", text)
    return _AUTH_HEADER.sub(r"\1\2[secret]", text)


class TokenScrubFilter(logging.Filter):
    """Rewrites a record's message with tokens masked (tornado's error logs print raw URIs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask tokens in the formatted message; never drops a record."""
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install(*loggers: logging.Logger) -> TokenScrubFilter:
    """Attach one filter to tornado's loggers and to the given ones (idempotent)."""
    targets = [logging.getLogger(name) for name in TORNADO_LOGGERS] + list(loggers)
    existing = next(
        (f for lg in targets for f in lg.filters if isinstance(f, TokenScrubFilter)), None
    )
    filt = existing or TokenScrubFilter()
    for lg in targets:
        if filt not in lg.filters:
            lg.addFilter(filt)
    return filt
