"""Token and connection controls for the launcher panel: list, rotate, revoke, forwards."""

from __future__ import annotations

import json
import time
import typing as t

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from ..tokens import TokenError, TokenStore, valid_name

if t.TYPE_CHECKING:
    from .app import ColabRemoteApp

#: A forward report older than this is ignored (the companion re-reports after each heal).
FORWARD_TTL_SECONDS = 24 * 3600
#: The resource an Authorizer is asked about for the extension's own API (all allowed by
#: jupyter_server's default AllowAllAuthorizer).
AUTH_RESOURCE = "colabremote"


def session_token_name(handler: APIHandler) -> str | None:
    """The store token this request authenticated with (token or its login cookie); None for
    any other identity, e.g. the anonymous user of a plain `jupyter lab`."""
    used = getattr(handler, "_colabremote_token", None)
    return used[0] if used else None


def session_is_guest(handler: ColabRemoteAPIHandler) -> bool:
    """True when the request's token has an expiry: a guest token (see `check_may_manage`)."""
    name = session_token_name(handler)
    record = handler.store.get(name) if name else None
    return record is not None and record.expires is not None


class ColabRemoteAPIHandler(ExtensionHandlerMixin, APIHandler):
    """Base of the extension's JSON API: its app, and the `colabremote` auth resource."""

    auth_resource = AUTH_RESOURCE

    @property
    def app(self) -> ColabRemoteApp:
        """The ColabRemoteApp serving this request."""
        return t.cast("ColabRemoteApp", self.extensionapp)

    @property
    def store(self) -> TokenStore:
        """The extension's token store."""
        store = self.app.token_store
        assert store is not None  # opened in initialize_settings, before any route exists
        return store

    def check_may_manage(self, name: str) -> None:
        """The rule between tokens: a token with an expiry is a guest token and may see,
        rotate and revoke only itself; a token without one is an owner token (full control).

        So a time-limited URL handed to someone cannot outlive its expiry through another
        token, nor lock the owner out. (It still runs code as the runtime's user.)
        """
        if session_is_guest(self) and session_token_name(self) != name:
            raise web.HTTPError(
                403, "a token with an expiry (a guest token) may manage only itself"
            )


class TokensHandler(ColabRemoteAPIHandler):
    """`GET /colabremote/api/tokens`: names and times (never secrets)."""

    @web.authenticated
    @authorized
    def get(self) -> None:
        """List tokens; `current` names the one this browser session uses. A guest token
        sees only itself."""
        current = session_token_name(self)
        records = self.store.records()
        if session_is_guest(self):
            records = [r for r in records if r.name == current]
        self.finish(json.dumps({"tokens": [r.public() for r in records], "current": current}))


class TokenHandler(ColabRemoteAPIHandler):
    """`POST .../tokens/NAME/rotate` and `DELETE .../tokens/NAME`."""

    @web.authenticated
    @authorized
    def post(self, name: str, action: str) -> None:
        """Rotate: return the new secret once, and keep this browser session logged in."""
        if action != "rotate":
            raise web.HTTPError(404)
        self.check_may_manage(name)
        try:
            secret = self.store.rotate(valid_name(name))
        except TokenError as e:
            raise web.HTTPError(404, str(e)) from e
        record = self.store.get(name)
        assert record is not None
        if session_token_name(self) == name:
            # The old cookie was tied to the old secret; issue one for the new rotation.
            self._colabremote_token = (name, record.generation)
            self.identity_provider.set_login_cookie(self, self.current_user)
        self.finish(json.dumps({"name": name, "token": secret, "url": self.app.colab_url(secret)}))

    @web.authenticated
    @authorized
    def delete(self, name: str, action: str = "") -> None:
        """Revoke a token: refused from the next request on, its open sockets closed."""
        self.check_may_manage(name)
        try:
            self.store.revoke(valid_name(name))
        except TokenError as e:
            raise web.HTTPError(404, str(e)) from e
        self.set_status(204)
        self.finish()


class ForwardHandler(ColabRemoteAPIHandler):
    """`PUT /colabremote/api/forward`: the companion reports the local port it forwards."""

    @web.authenticated
    @authorized
    def put(self) -> None:
        """Record {"local_port": N, "client": "laptop"} (owner tokens only: the port decides
        the URL the panel shows)."""
        if session_is_guest(self):
            raise web.HTTPError(
                403, "a token with an expiry (a guest token) cannot report forwards"
            )
        try:
            body = self.get_json_body() or {}
            port = int(body["local_port"])
            client = str(body.get("client", "companion"))[:64]
        except (web.HTTPError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise web.HTTPError(400, 'expected {"local_port": PORT, "client": NAME}') from e
        if not 0 < port < 65536:
            raise web.HTTPError(400, "local_port out of range")
        self.app.forwards[client] = {"local_port": port, "reported": time.time()}
        self.set_status(204)
        self.finish()


def live_forwards(forwards: dict[str, dict[str, t.Any]]) -> dict[str, dict[str, t.Any]]:
    """Reports still fresh enough to trust, newest last."""
    now = time.time()
    fresh = {k: v for k, v in forwards.items() if now - v["reported"] < FORWARD_TTL_SECONDS}
    return dict(sorted(fresh.items(), key=lambda kv: kv[1]["reported"]))


TOKEN_HANDLERS = [
    (r"/colabremote/api/tokens", TokensHandler),
    (r"/colabremote/api/tokens/([A-Za-z0-9_.-]+)/?(rotate)?", TokenHandler),
    (r"/colabremote/api/forward", ForwardHandler),
]
