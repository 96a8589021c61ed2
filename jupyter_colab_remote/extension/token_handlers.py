"""Token and connection controls for the launcher panel: list, rotate, revoke, forwards."""

from __future__ import annotations

import json
import time
import typing as t

from jupyter_server.base.handlers import APIHandler
from tornado import web

from ..tokens import TokenError, TokenStore, valid_name

#: A forward report older than this is ignored (the companion re-reports after each heal).
FORWARD_TTL_SECONDS = 24 * 3600


def session_token_name(handler: APIHandler) -> str | None:
    """The store token this request authenticated with (token or its login cookie); None for
    any other identity, e.g. the anonymous user of a plain `jupyter lab`."""
    used = getattr(handler, "_colabremote_token", None)
    return used[0] if used else None


class TokenBase(APIHandler):
    """Shared helpers: the store, the app and JSON errors."""

    @property
    def store(self) -> TokenStore:
        """The extension's token store."""
        return self.settings["colabremote_token_store"]

    def fail(self, status: int, message: str) -> None:
        """Answer a JSON error the panel can show."""
        self.set_status(status)
        self.finish(json.dumps({"message": message}))


class TokensHandler(TokenBase):
    """`GET /colabremote/api/tokens`: names and times (never secrets)."""

    @web.authenticated
    def get(self) -> None:
        """List tokens; `current` names the one this browser session uses."""
        current = session_token_name(self)
        self.finish(
            json.dumps({"tokens": [r.public() for r in self.store.records()], "current": current})
        )


class TokenHandler(TokenBase):
    """`POST .../tokens/NAME/rotate` and `DELETE .../tokens/NAME`."""

    @web.authenticated
    def post(self, name: str, action: str) -> None:
        """Rotate: return the new secret once, and keep this browser session logged in."""
        if action != "rotate":
            raise web.HTTPError(404)
        try:
            secret = self.store.rotate(valid_name(name))
        except TokenError as e:
            return self.fail(404, str(e))
        record = self.store.get(name)
        assert record is not None
        if session_token_name(self) == name:
            # The old cookie was tied to the old secret; issue one for the new rotation.
            self._colabremote_token = (name, record.generation)
            self.identity_provider.set_login_cookie(self, self.current_user)
        app = self.settings["colabremote"]
        self.finish(json.dumps({"name": name, "token": secret, "url": app.colab_url(secret)}))

    @web.authenticated
    def delete(self, name: str, action: str = "") -> None:
        """Revoke a token (refused from the next request on)."""
        try:
            self.store.revoke(valid_name(name))
        except TokenError as e:
            return self.fail(404, str(e))
        self.set_status(204)
        self.finish()


class ForwardHandler(TokenBase):
    """`PUT /colabremote/api/forward`: the companion reports the local port it forwards."""

    @web.authenticated
    def put(self) -> None:
        """Record {"local_port": N, "client": "laptop"}."""
        try:
            body = json.loads(self.request.body or b"{}")
            port = int(body["local_port"])
            client = str(body.get("client", "companion"))[:64]
        except (ValueError, KeyError, TypeError):
            return self.fail(400, 'expected {"local_port": PORT, "client": NAME}')
        if not 0 < port < 65536:
            return self.fail(400, "local_port out of range")
        app = self.settings["colabremote"]
        app.forwards[client] = {"local_port": port, "reported": time.time()}
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
