"""A jupyter_server IdentityProvider that checks tokens against the token store."""

from __future__ import annotations

import json
import sys
import typing as t
from urllib.parse import parse_qsl, urlencode

from jupyter_core.utils import ensure_async
from jupyter_server.auth.identity import IdentityProvider, User
from jupyter_server.base.handlers import APIHandler
from tornado import httputil, web
from tornado.websocket import WebSocketHandler
from traitlets import Instance, Unicode

from ..tokens import TokenRecord, TokenStore
from .origins import OriginPolicy
from .socket_guard import SocketGuard


def token_in_address(handler: web.RequestHandler) -> bool:
    """True for a browser's page navigation (GET) carrying the token in its query.

    Only navigations (Sec-Fetch-Mode: navigate, sent by every current browser) qualify: Colab's
    own requests are fetches and WebSockets with the token in the query, and scripts send no
    Sec-Fetch headers; all of them keep working unchanged. API, file and WebSocket handlers
    and JupyterLab's pages are left alone as well.
    """
    request = handler.request
    if request.method != "GET" or request.headers.get("Sec-Fetch-Mode") != "navigate":
        return False
    if isinstance(handler, (WebSocketHandler, APIHandler, web.StaticFileHandler)):
        return False
    # JupyterLab's pages remove the token from the address bar themselves, and the launcher
    # panel reads it from the page's navigation entry to show the URL for Colab: a redirect
    # would lose it there.
    lab = sys.modules.get("jupyterlab_server.handlers")
    if lab is not None and isinstance(handler, lab.LabHandler):
        return False
    return bool(handler.get_query_arguments("token"))


def address_without_token(request: httputil.HTTPServerRequest) -> str:
    """The request's path and query minus every `token` parameter (however it was encoded)."""
    query = [(k, v) for k, v in parse_qsl(request.query, keep_blank_values=True) if k != "token"]
    path = "/" + request.path.lstrip("/")  # never "//host": that would leave the server
    return f"{path}?{urlencode(query)}" if query else path


class TokenStoreIdentityProvider(IdentityProvider):
    """Authenticates with named tokens from the token store, and refuses foreign origins.

    Differences from jupyter_server's default provider:
    - any live token in the store is accepted; rotation and revocation apply to the very
      next request, because the store is re-read when its file changes;
    - the login cookie records which token (and which rotation of it) it came from, so
      revoking a token also ends the browser sessions opened with it;
    - a request whose Origin is neither the server itself nor on the allow-list is
      refused even with a valid token (stock jupyter_server accepts any origin then), and
      allowed other origins (Colab) cannot reach terminals or the token and forward API;
    - every WebSocket is noted with its token, so revoking, rotating or expiring that token
      closes it (`socket_guard`);
    - a browser that navigates to a page with `?token=` gets its login cookie and is sent to
      the same address without the token, so it leaves the address bar and history.
    """

    # There is no single server token: keep jupyter_server from generating or printing one,
    # and from writing one into jpserver-<pid>.json.
    token = Unicode("", help="Unused: tokens live in the colabremote token store.")

    token_store = Instance(
        TokenStore,
        allow_none=True,
        help="The store tokens are checked against; set by the colabremote extension when it "
        "loads (until then no token is accepted).",
    )
    origin_policy = Instance(
        OriginPolicy,
        allow_none=True,
        help="Browser origins allowed to use the server; set by the colabremote extension.",
    )
    socket_guard = Instance(
        SocketGuard,
        allow_none=True,
        help="Closes WebSockets whose token is revoked; set by the colabremote extension.",
    )

    @property
    def auth_enabled(self) -> bool:
        """Authentication is always on."""
        return True

    @property
    def login_available(self) -> bool:
        """The login page accepts a token from the store."""
        return True

    def _verify(self, secret: str) -> TokenRecord | None:
        """The live store record for a token, or None (also before the store is set)."""
        return self.token_store.verify(secret) if self.token_store is not None else None

    def _origin_refused(self, handler: web.RequestHandler) -> bool:
        policy = self.origin_policy
        origin = handler.request.headers.get("Origin")
        request = handler.request
        if policy is None:
            return False
        if not policy.allows(origin, request.host):
            self.log.warning("Refusing request from origin %s to %s", origin, request.path)
            return True
        base_url = handler.settings.get("base_url", "/")
        if not policy.allows_path(origin, request.host, request.path, base_url):
            self.log.warning(
                "Refusing %s from origin %s: only the server's own pages may use it",
                request.path,
                origin,
            )
            return True
        return False

    async def get_user(self, handler: web.RequestHandler) -> User | None:  # type: ignore[override]
        """Return the user for a request from an allowed origin with a live token or cookie."""
        if self._origin_refused(handler):
            return None
        user = await ensure_async(super().get_user(handler))
        if user is None:
            return None
        used = getattr(handler, "_colabremote_token", None)
        if used and self.socket_guard is not None and isinstance(handler, WebSocketHandler):
            self.socket_guard.watch(handler, *used)
        if used and token_in_address(handler):
            # The login cookie is set (super().get_user did it): drop the token from the URL.
            handler.redirect(address_without_token(handler.request), permanent=False)
            raise web.Finish()
        return user

    async def get_user_token(self, handler: web.RequestHandler) -> User | None:
        """Identify the user by a token in the query or the Authorization header."""
        record = self._verify(self.get_token(handler) or "")
        if record is None:
            return None
        handler._colabremote_token = (record.name, record.generation)  # type: ignore[attr-defined]
        return self._user_for(record.name)

    def _user_for(self, token_name: str) -> User:
        return User(username=f"colab-{token_name}", name=token_name, display_name=token_name)

    def user_to_cookie(self, user: User) -> str:
        """Serialize the user with the token (and rotation) that authenticated it."""
        return json.dumps({"username": user.username, "token": getattr(user, "_token", None)})

    def set_login_cookie(self, handler: web.RequestHandler, user: User) -> None:
        """Tie the cookie to the token generation used for this request."""
        user._token = getattr(handler, "_colabremote_token", None)  # type: ignore[attr-defined]
        super().set_login_cookie(handler, user)

    def get_user_cookie(self, handler: web.RequestHandler) -> User | None:  # type: ignore[override]
        """Accept a login cookie only while its token is unrevoked and unrotated."""
        raw = handler.get_secure_cookie(
            self.get_cookie_name(handler), **self.get_secure_cookie_kwargs
        )
        if not raw:
            return None
        try:
            data = json.loads(raw)
            name, generation = data["token"]
        except (ValueError, TypeError, KeyError):
            return None
        if self.token_store is None or not self.token_store.is_current(name, generation):
            return None
        # A token in the same request wins (jupyter_server prefers it): keep the one it noted.
        if not hasattr(handler, "_colabremote_token"):
            handler._colabremote_token = (name, generation)  # type: ignore[attr-defined]
        user = self._user_for(name)
        user._token = (name, generation)  # type: ignore[attr-defined]
        return user

    def should_check_origin(self, handler: web.RequestHandler) -> bool:
        """Skip jupyter_server's origin check where our policy applies: get_user enforces it.

        jupyter_server answers a blocked cross-origin API request with 404; deciding in
        get_user instead gives the refused page a clear 403, with or without a token.
        """
        if self.origin_policy is not None:
            return False
        return super().should_check_origin(handler)

    def process_login_form(self, handler: web.RequestHandler) -> User | None:
        """The login page: the password field takes a token from the store."""
        record = self._verify(handler.get_argument("password", default=""))
        if record is None:
            return None
        handler._colabremote_token = (record.name, record.generation)  # type: ignore[attr-defined]
        return self._user_for(record.name)

    def validate_security(self, app: t.Any, ssl_options: dict[str, t.Any] | None = None) -> None:
        """Nothing to warn about: auth is always on and the bind is checked at start."""
