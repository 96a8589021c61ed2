"""A jupyter_server IdentityProvider that checks tokens against the token store."""

from __future__ import annotations

import json
import typing as t

from jupyter_server.auth.identity import IdentityProvider, User
from tornado import web
from traitlets import Unicode

if t.TYPE_CHECKING:
    from ..tokens import TokenStore
    from .origins import OriginPolicy

#: Keys under which the extension puts its objects into the tornado settings.
STORE_SETTING = "colabremote_token_store"
POLICY_SETTING = "colabremote_origin_policy"


class TokenStoreIdentityProvider(IdentityProvider):
    """Authenticates with named tokens from the token store, and refuses foreign origins.

    Differences from jupyter_server's default provider:
    - any live token in the store is accepted; rotation and revocation apply to the very
      next request, because the store is re-read when its file changes;
    - the login cookie records which token (and which rotation of it) it came from, so
      revoking a token also ends the browser sessions opened with it;
    - a request whose Origin is neither the server itself nor on the allow-list is
      refused even with a valid token (stock jupyter_server accepts any origin then).
    """

    # There is no single server token: keep jupyter_server from generating or printing one,
    # and from writing one into jpserver-<pid>.json.
    token = Unicode("", help="Unused: tokens live in the colabremote token store.")

    @property
    def auth_enabled(self) -> bool:
        """Authentication is always on."""
        return True

    @property
    def login_available(self) -> bool:
        """The login page accepts a token from the store."""
        return True

    def _store(self, handler: web.RequestHandler) -> TokenStore:
        return handler.settings[STORE_SETTING]

    def _origin_refused(self, handler: web.RequestHandler) -> bool:
        policy: OriginPolicy | None = handler.settings.get(POLICY_SETTING)
        origin = handler.request.headers.get("Origin")
        if policy is None or policy.allows(origin, handler.request.host):
            return False
        self.log.warning("Refusing request from origin %s to %s", origin, handler.request.path)
        return True

    async def get_user(self, handler: web.RequestHandler) -> User | None:  # type: ignore[override]
        """Return the user for a request from an allowed origin with a live token or cookie."""
        if self._origin_refused(handler):
            return None
        return await self._get_user(handler)

    async def get_user_token(self, handler: web.RequestHandler) -> User | None:
        """Identify the user by a token in the query or the Authorization header."""
        record = self._store(handler).verify(self.get_token(handler) or "")
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
        if not self._store(handler).is_current(name, generation):
            return None
        handler._colabremote_token = (name, generation)  # type: ignore[attr-defined]
        user = self._user_for(name)
        user._token = (name, generation)  # type: ignore[attr-defined]
        return user

    def should_check_origin(self, handler: web.RequestHandler) -> bool:
        """Skip jupyter_server's origin check where our policy applies: get_user enforces it.

        jupyter_server answers a blocked cross-origin API request with 404; deciding in
        get_user instead gives the refused page a clear 403, with or without a token.
        """
        if POLICY_SETTING in handler.settings:
            return False
        return super().should_check_origin(handler)

    def process_login_form(self, handler: web.RequestHandler) -> User | None:
        """The login page: the password field takes a token from the store."""
        record = self._store(handler).verify(handler.get_argument("password", default=""))
        if record is None:
            return None
        handler._colabremote_token = (record.name, record.generation)  # type: ignore[attr-defined]
        return self._user_for(record.name)

    def validate_security(self, app: t.Any, ssl_options: dict[str, t.Any] | None = None) -> None:
        """Nothing to warn about: auth is always on and the bind is checked at start."""
