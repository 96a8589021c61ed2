"""Which browser origins may use the runtime, and the CORS headers Colab needs."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from tornado.httputil import HTTPHeaders, HTTPServerRequest
from tornado.web import OutputTransform

#: Colab's page, and the sandbox origin Colab's own runtime image allows too.
COLAB_ORIGIN_PATTERN = r"https://colab\.(research|sandbox)\.google\.com"

#: Paths (under base_url) that only the server's own pages and non-browser clients may use:
#: a shell, and the token, forward and ports API. Colab's page needs none of them, so a
#: script injected into it can neither open a shell, take over tokens nor redirect links.
OWN_ORIGIN_ONLY = re.compile(
    r"(api/terminals|terminals/websocket|colabremote/api/(tokens|forward|ports))(/|$)"
)

#: Sent on every response. Not "no-referrer": jupyter_server accepts a GET of /files/ without
#: an XSRF token only when its Referer is the server itself (JupyterLab's "open in new tab" and
#: downloads). Other sites never see the address, whose query may hold the token.
REFERRER_POLICY = "same-origin"


def same_origin(origin: str, host: str) -> bool:
    """True when the Origin names the host the request was sent to (the page is ours)."""
    parts = urlsplit(origin)
    return bool(parts.netloc) and parts.netloc.lower() == (host or "").lower()


class OriginPolicy:
    """The allow-list: Colab's origins plus any the user adds, matched in full."""

    def __init__(self, pattern: str = COLAB_ORIGIN_PATTERN, extra: list[str] | None = None) -> None:
        self.pattern = pattern
        self.extra = {o.rstrip("/") for o in extra or []}
        self._regex = re.compile(pattern) if pattern else None

    def allows_cross_origin(self, origin: str) -> bool:
        """True if a page at `origin` may call this server from another origin."""
        if origin in self.extra:
            return True
        return bool(self._regex and self._regex.fullmatch(origin))

    def allows(self, origin: str | None, host: str) -> bool:
        """The request rule: no Origin (scripts, VS Code), our own pages, or the allow-list."""
        if not origin:
            return True
        return same_origin(origin, host) or self.allows_cross_origin(origin)

    def allows_path(self, origin: str | None, host: str, path: str, base_url: str = "/") -> bool:
        """Least privilege for other origins: no terminals, tokens or forwards from them."""
        if not origin or same_origin(origin, host):
            return True
        relative = path[len(base_url) :] if path.startswith(base_url) else path
        # Decoded: whatever escapes a client chose, it must not slip past the rule.
        return OWN_ORIGIN_ONLY.match(unquote(relative).lstrip("/")) is None


def make_cors_transform(policy: OriginPolicy) -> type[OutputTransform]:
    """Build a tornado output transform that applies `policy` (and the Referrer-Policy) to
    every response.

    Why a transform: jupyter_server's own handlers (kernels, sessions, contents) set
    CORS headers from settings that cannot express "Colab only, and never anyone
    else even with a token"; a transform sees every response on its way out.
    """

    class ColabCorsTransform(OutputTransform):
        """Adds Colab's CORS headers to allowed origins and strips them from others."""

        def __init__(self, request: HTTPServerRequest) -> None:
            super().__init__(request)
            self._origin = request.headers.get("Origin")
            self._is_preflight = request.method == "OPTIONS"
            self._requested_headers = request.headers.get("Access-Control-Request-Headers")

        def transform_first_chunk(
            self, status_code: int, headers: HTTPHeaders, chunk: bytes, finishing: bool
        ) -> tuple[int, HTTPHeaders, bytes]:
            origin = self._origin
            headers.setdefault("Referrer-Policy", REFERRER_POLICY)
            if origin and policy.allows_cross_origin(origin):
                headers["Access-Control-Allow-Origin"] = origin
                headers["Access-Control-Allow-Credentials"] = "true"
                headers.add("Vary", "Origin")
                if self._is_preflight:
                    # Private Network Access preflights (older Chromes) want this answer.
                    headers["Access-Control-Allow-Private-Network"] = "true"
                    headers.setdefault("Access-Control-Max-Age", "600")
                    if self._requested_headers:
                        # Colab may send headers beyond jupyter_server's fixed list.
                        headers["Access-Control-Allow-Headers"] = self._requested_headers
            elif origin:
                for name in (
                    "Access-Control-Allow-Origin",
                    "Access-Control-Allow-Credentials",
                    "Access-Control-Allow-Private-Network",
                ):
                    headers.pop(name, None)
            return status_code, headers, chunk

    return ColabCorsTransform
