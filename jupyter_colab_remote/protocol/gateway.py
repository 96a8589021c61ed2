"""How the agent hands a kernel gateway to the runtime it starts: the token's variable (never
a command line), and the URL's public form (as the runtime file and the status show it)."""

from __future__ import annotations

import urllib.parse

#: The variable jupyter_server's GatewayClient reads the gateway token from.
GATEWAY_TOKEN_ENV = "JUPYTER_GATEWAY_AUTH_TOKEN"


def public_url(url: str | None) -> str | None:
    """A gateway URL as shown and compared: no user:password, query or trailing slash."""
    if not url:
        return None
    parts = urllib.parse.urlsplit(url.strip())
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
