"""Keep tokens out of logs: a filter that masks them in every record tornado or Jupyter writes."""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

#: Any query parameter; its name may be percent-encoded (`?%74oken=` is `?token=` to tornado).
_QUERY_PARAM = re.compile(r"([?&;])([^=&;?#\s'\"]+)=([^&;\s'\"#]+)")
#: The same inside a URL-encoded URL (http-over-ws's auth_url parameter): `%3Ftoken%3D...`.
_ENCODED_PARAM = re.compile(
    r"(?i)(%3F|%26|%3B)((?:[0-9a-z._~+-]|%(?!3d|26|3b)[0-9a-f]{2})+)%3D"
    r"((?:[0-9a-z._~+-]|%(?!26|3b|23)[0-9a-f]{2})+)"
)
_AUTH_HEADER = re.compile(r"(?i)\b(token|bearer)(\s+|%20)[0-9a-z._~+/=-]{16,}")
#: Loggers that can print a request URI: tornado's access, error and general logs.
TORNADO_LOGGERS = ("tornado.access", "tornado.application", "tornado.general")


def _is_token_name(name: str) -> bool:
    # Decoded until stable (bounded): whatever encoding a client chose, `token` is `token`.
    for _ in range(4):
        decoded = unquote_plus(name)
        if decoded == name:
            break
        name = decoded
    return name.strip().lower() == "token"


def _mask(match: re.Match[str]) -> str:
    separator, name, _value = match.groups()
    if not _is_token_name(name):
        return match.group(0)
    equals = "=" if match.re is _QUERY_PARAM else match.group(0)[len(separator) + len(name) :][:3]
    return f"{separator}{name}{equals}[secret]"


def scrub(text: str) -> str:
    """Replace token values in URLs (however encoded) and Authorization headers by `[secret]`."""
    text = _QUERY_PARAM.sub(_mask, text)
    text = _ENCODED_PARAM.sub(_mask, text)
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
