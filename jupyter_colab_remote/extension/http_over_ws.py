"""The http-over-websocket protocol, wire-compatible with jupyter_http_over_ws 0.0.7.

Colab's page cannot call a local runtime's REST API directly (mixed content, private network
access), so it tunnels requests through WebSockets:

- `/http_over_websocket`: JSON request frames in, JSON response frames (base64 body chunks)
  out, correlated by `message_id`;
- `/http_over_websocket/diagnose`: version and cookie diagnostics for Colab's error messages;
- `/http_over_websocket/proxied_ws/<path>`: a WebSocket relayed to `<path>` on this server
  (the kernel channels).

Requests are replayed against this same server over loopback, authenticated with the token
that authenticated the WebSocket, so every proxied request passes the server's own
authentication and authorization.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import re
import typing as t
from dataclasses import dataclass
from urllib.parse import parse_qs, parse_qsl, quote, urlencode, urlsplit

from jupyter_server.auth.decorator import allow_unauthenticated, ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import httpclient, httputil, web, websocket

from . import loopback_http

if t.TYPE_CHECKING:
    from .app import ColabRemoteApp

#: The jupyter_http_over_ws version whose protocol we speak (Colab asks for min_version 0.0.7).
EXTENSION_VERSION = "0.0.7"

#: Query parameters Colab sends when opening the sockets.
MIN_VERSION_PARAM = "min_version"
AUTH_URL_PARAM = "jupyter_http_over_ws_auth_url"

#: Largest body slice per response frame: Colab's client parses each frame synchronously.
MAX_CHUNK_BYTES = 64 * 1024

#: Requests in flight per socket; further frames wait unread (backpressure on the client).
MAX_CONCURRENT_REQUESTS = 16

#: Requests in flight over all sockets (each holds a loopback connection: two descriptors).
MAX_TOTAL_REQUESTS = 128

#: Response bytes queued for one socket's client beyond which reading the proxied responses
#: pauses until the client catches up: what bounds memory when a client (or its link) is slow.
MAX_QUEUED_BYTES = 2 * 1024**2

#: Seconds a response may wait for its client to take anything before it is aborted (its
#: slot among MAX_TOTAL_REQUESTS freed); the default of ColabRemoteApp.http_over_ws_idle_timeout.
DEFAULT_IDLE_TIMEOUT = 60.0

#: Sockets (/http_over_websocket and proxied_ws) one token may hold open; Colab opens one or
#: two per tab. The default of ColabRemoteApp.http_over_ws_max_sockets.
DEFAULT_MAX_SOCKETS = 64

#: Longest path proxied; a longer one gets 414 (tornado's server refuses a request head
#: larger than 64 KiB without an answer anyway).
MAX_PATH_CHARS = 32 * 1024

#: Client-controlled text (paths, keys) is cut to this many characters in logs and replies.
MAX_SHOWN_CHARS = 200

#: Largest /diagnose message (a message id; the socket needs no token): larger ones close it.
MAX_DIAGNOSE_MESSAGE = 64 * 1024

#: /diagnose sockets open at once, over all clients: they need no token, so no per-token cap
#: applies; Colab opens one, briefly, after a failed connection.
MAX_DIAGNOSE_SOCKETS = 16

#: Close code for a refused min_version (the original sent 400, which is not a valid code).
CLOSE_BAD_VERSION = 4400

#: Proxied requests may legitimately be slow (a kernel start, a large save).
PROXY_CONNECT_TIMEOUT = 30.0
PROXY_REQUEST_TIMEOUT = 600.0

#: Bodies are streamed at the client's pace, so this only caps a single download's size.
MAX_PROXIED_BODY = 16 * 1024**3

#: Kernel messages (images, large outputs) may exceed tornado's 10 MiB default.
MAX_UPSTREAM_WS_MESSAGE = 1024**3

UNCAUGHT_ERROR_TEXT = "Uncaught server-side exception. Check logs for additional details."
REQUIRED_KEYS = ("message_id", "method", "path")

_PROXIED_WS_MARKER = "/http_over_websocket/proxied_ws/"
_STRICT_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?(?:([ab])(\d+))?", re.ASCII)
_METHOD = re.compile(r"[A-Z][A-Z0-9_-]{0,31}")
#: Characters left as they are when quoting a path: URL syntax and existing escapes.
_PATH_SAFE = "/?&=%:@!$'()*+,;~#[]"
_JSON_START = re.compile(rb"\s*[\[{]")


# -- versions ------------------------------------------------------------------
def parse_version(text: str) -> tuple[int, int, int, str, int] | None:
    """Parse a distutils StrictVersion string ("0.0.7", "0.0.1a2"); None if malformed."""
    m = _STRICT_VERSION.fullmatch(text)
    if m is None:
        return None
    major, minor, patch, pre, pre_number = m.groups()
    # A final release sorts after its a/b pre-releases, as in StrictVersion.
    return (int(major), int(minor), int(patch or 0), pre or "~", int(pre_number or 0))


def min_version_problem(min_version: str | None) -> str | None:
    """Why a client's `min_version` is refused ("unparsable", "outdated"), or None."""
    if min_version is None:
        return None
    parsed = parse_version(min_version)
    if parsed is None:
        return "unparsable"
    if parsed > t.cast(tuple, parse_version(EXTENSION_VERSION)):
        return "outdated"
    return None


def shorten(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """`text` cut to `limit` characters, saying how long it was: for client-controlled text
    in logs and error frames."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


# -- frames --------------------------------------------------------------------
def error_frame(status: int, text: str, message_id: t.Any = None) -> dict[str, t.Any]:
    """A protocol error frame; it ends the exchange for `message_id` if one is given."""
    frame: dict[str, t.Any] = {"done": True, "status": status, "statusText": text}
    if message_id is not None:
        frame["message_id"] = message_id
    return frame


class ProtocolError(Exception):
    """A request frame that cannot be served; carries the error frame to send back."""

    def __init__(self, text: str, message_id: t.Any = None, status: int = 400) -> None:
        super().__init__(text)
        self.frame = error_frame(status, text, message_id)


@dataclass
class ProxyRequest:
    """One request frame, validated."""

    message_id: t.Any
    method: str
    path: str
    body: bytes | None


def parse_request(message: str | bytes) -> ProxyRequest:
    """Validate a request frame; raise ProtocolError (status 400) if it is malformed."""
    try:
        contents = json.loads(message)
    except ValueError as e:  # also UnicodeDecodeError from a binary frame
        raise ProtocolError("JSON input is required.") from e
    except RecursionError as e:  # '[[[[...': deeper than the parser's stack
        raise ProtocolError("JSON input is required: nested too deeply.") from e
    if not isinstance(contents, dict):
        raise ProtocolError("JSON input is required: a request must be a JSON object.")
    message_id = contents.get("message_id")
    missing = [k for k in REQUIRED_KEYS if k not in contents]
    if missing:
        got = shorten(", ".join(sorted(map(str, contents))))
        raise ProtocolError(
            "Invalid request. The body must contain the following keys: "
            f"{', '.join(REQUIRED_KEYS)}. Got: {got}",
            message_id,
        )
    method = str(contents["method"]).upper()
    if not _METHOD.fullmatch(method):
        raise ProtocolError(f"Invalid request: bad method {method[:40]!r}.", message_id)
    path = contents["path"]
    # A path must not be able to change the host the request goes to ("@evil", "//evil").
    if not isinstance(path, str) or not path.startswith("/") or path.startswith("//"):
        raise ProtocolError("Invalid request: path must be an absolute URL path.", message_id)
    if len(path) <= MAX_PATH_CHARS:
        # Spaces, controls and non-ASCII are escaped, as a browser would before sending them.
        path = quote(path, safe=_PATH_SAFE)
    if len(path) > MAX_PATH_CHARS:
        raise ProtocolError("Request-URI Too Long", message_id, status=414)
    body: bytes | None
    if contents.get("body_base64"):
        encoded = contents["body_base64"]
        try:
            # Kept as bytes: the original decoded them as UTF-8, breaking binary bodies.
            body = base64.b64decode(encoded, validate=True)
        except (TypeError, ValueError, binascii.Error) as e:
            raise ProtocolError("Invalid request: body_base64 is not base64.", message_id) from e
    else:
        text = contents.get("body")
        if text is not None and not isinstance(text, str):
            raise ProtocolError("Invalid request: body must be a string.", message_id)
        body = None if text is None else text.encode("utf-8")
    return ProxyRequest(message_id, method, path, body)


class ResponseEmitter:
    """Turns one streamed HTTP response into response frames.

    The first frame carries status, statusText and headers; every frame carries at most
    MAX_CHUNK_BYTES of body; the last has "done": true. Each chunk is held back until the
    next arrives, because only then is it known not to be the last.
    """

    def __init__(self, message_id: t.Any, send: t.Callable[[dict[str, t.Any]], None]) -> None:
        self.message_id = message_id
        self._send = send
        self.status: int | None = None
        self.reason = ""
        self.headers = httputil.HTTPHeaders()
        self._pending: dict[str, t.Any] | None = None
        self.sent_frames = 0

    def start(self, status: int, reason: str, headers: httputil.HTTPHeaders) -> None:
        """The response's status line and headers (sent with the first body frame)."""
        self.status, self.reason, self.headers = status, reason, headers

    def _metadata(self) -> dict[str, t.Any]:
        return {"status": self.status, "statusText": self.reason, "headers": dict(self.headers)}

    def body_chunk(self, chunk: bytes) -> None:
        """A piece of the body: queue it, sending the one before it."""
        for start in range(0, len(chunk), MAX_CHUNK_BYTES):
            piece = chunk[start : start + MAX_CHUNK_BYTES]
            frame: dict[str, t.Any] = {
                "message_id": self.message_id,
                "data": base64.b64encode(piece).decode("ascii"),
            }
            if self._pending is None and self.sent_frames == 0:
                frame.update(self._metadata())
            else:
                self._flush(done=False)
            self._pending = frame

    def _flush(self, done: bool) -> None:
        if self._pending is not None:
            self._pending["done"] = done
            self._send(self._pending)
            self._pending = None
            self.sent_frames += 1

    def finish(self) -> None:
        """Send the last frame; an empty body gives one frame without "data"."""
        if self._pending is None and self.sent_frames == 0:
            self._pending = {"message_id": self.message_id, **self._metadata()}
        self._flush(done=True)


class SendWindow:
    """Bytes written to one WebSocket that its client has not taken yet (still in tornado's
    write buffer), and a wait for them to drop to the limit: backpressure for producers."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.queued = 0
        #: Writes the client has taken so far: progress, for the idle timeout.
        self.taken = 0
        self._room = asyncio.Event()
        self._room.set()

    def add(self, size: int, flushed: t.Awaitable[None] | None) -> None:
        """Count `size` bytes until `flushed` (write_message's future) is done."""
        if flushed is None:
            return
        self.queued += size
        if self.queued > self.limit:
            self._room.clear()
        asyncio.ensure_future(flushed).add_done_callback(lambda f: self._flushed(size, f))

    def _flushed(self, size: int, future: asyncio.Future[None]) -> None:
        if not future.cancelled():
            future.exception()  # a closed socket: nothing to report, it is handled on close
        self.queued -= size
        self.taken += 1
        if self.queued <= self.limit:
            self._room.set()

    def room(self) -> t.Awaitable[None] | None:
        """None if more may be sent now, else an awaitable done once it may."""
        return None if self._room.is_set() else self._room.wait()

    async def wait_room(self, idle_timeout: float) -> bool:
        """Wait until more may be sent (True); False once the client has taken nothing for
        `idle_timeout` seconds (a slow client that keeps taking something waits on)."""
        while not self._room.is_set():
            taken = self.taken
            try:
                await asyncio.wait_for(self._room.wait(), idle_timeout)
            except asyncio.TimeoutError:
                if self.taken == taken:
                    return False
        return True

    def release(self) -> None:
        """Let every waiter go (the socket closed: their tasks are being cancelled)."""
        self._room.set()


# -- where this server is --------------------------------------------------------
def loopback_base(serverapp: t.Any) -> tuple[str, str]:
    """(http scheme, "host:port") at which this process's own server can be reached: those of
    its connection URL, with a wildcard (or `localhost`) bind reached on a loopback address."""
    parts = urlsplit(serverapp.connection_url)
    ip = (serverapp.ip or "").strip("[]")
    if ip in ("", "0.0.0.0", "*", "localhost"):
        return parts.scheme, f"127.0.0.1:{serverapp.port}"
    if ip == "::":
        return parts.scheme, f"[::1]:{serverapp.port}"
    return parts.scheme, parts.netloc


def request_slots(app: ColabRemoteApp) -> asyncio.Semaphore:
    """The bound on requests in flight over all of `app`'s sockets."""
    if app.http_over_ws_slots is None:
        app.http_over_ws_slots = asyncio.Semaphore(MAX_TOTAL_REQUESTS)
    return app.http_over_ws_slots


def token_from_auth_url(auth_url: str) -> str | None:
    """The `token` query parameter of Colab's auth URL, if it is an http(s) URL."""
    try:
        parts = urlsplit(auth_url)
    except ValueError:
        return None
    # Only the scheme is checked: behind an SSH forward the URL names the local end of the
    # tunnel (localhost:9000) while this server sees its own port, so host:port may differ.
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    tokens = parse_qs(parts.query).get("token")
    return tokens[0] if tokens else None


def sendable_close(code: int | None, reason: str | None) -> tuple[int | None, str | None]:
    """A close code and reason that may be sent on the wire (1005/1006/1015 may not)."""
    if code is None:
        return None, None
    if code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999:
        return code, reason
    return 1011, reason


# -- handlers --------------------------------------------------------------------
class ColabWebSocketHandler(
    ExtensionHandlerMixin, WebSocketMixin, websocket.WebSocketHandler, JupyterHandler
):
    """Shared base: Jupyter authentication, the origin policy, the tunnel's token."""

    #: The token the socket was authenticated with; proxied requests reuse it.
    auth_token: str | None = None
    #: Counts what send_frame queued, where producers wait for the client (see SendWindow).
    outgoing: SendWindow | None = None
    _counted = False

    @property
    def app(self) -> ColabRemoteApp:
        """The ColabRemoteApp serving this socket."""
        return t.cast("ColabRemoteApp", self.extensionapp)

    def set_default_headers(self) -> None:
        """Skip JupyterHandler's page headers, which mean nothing on a WebSocket."""

    def get_compression_options(self) -> dict[str, t.Any] | None:  # type: ignore[override]
        """Compress as the kernel WebSocket does."""
        return self.settings.get("websocket_compression_options", None)

    def check_origin(self, origin: str | None = None) -> bool:
        """Apply the runtime's origin policy (including extra origins) when it is active."""
        policy = self.app.origin_policy
        if policy is None:
            return bool(super().check_origin(origin))
        if origin is None:
            origin = self.request.headers.get("Origin")
        return bool(policy.allows(origin, self.request.host))

    async def prepare(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Authenticate, accepting the token inside Colab's auth URL as a fallback."""
        if not self.identity_provider.get_token(self):
            token = token_from_auth_url(self.get_argument(AUTH_URL_PARAM, ""))
            if token:
                # Colab puts the token only in the auth URL; present it as a header so the
                # identity provider checks it like any other token.
                self.request.headers["Authorization"] = f"token {token}"
        result = super().prepare(*args, **kwargs)
        if result is not None:
            await result
        if self.current_user is not None and self.token_authenticated:
            self.auth_token = self.identity_provider.get_token(self) or None

    @contextlib.contextmanager
    def socket_quota(self, shared: str | None = None, cap: int | None = None) -> t.Iterator[None]:
        """Hold one of the credential's sockets (or, with `shared`, one of that pool's `cap`)
        for the block (the socket's whole life: tornado's get() returns once it closes);
        HTTP 429 if all of them are open already."""
        if shared is None:
            credential = self.auth_token or f"user:{getattr(self.current_user, 'username', '')}"
            # Keyed by a digest: the app's state never holds a token.
            key = hashlib.sha256(credential.encode()).hexdigest()
            cap = self.app.http_over_ws_max_sockets
            holder = "with this token"
        else:
            key, holder = shared, f"for {shared}"
        counts = self.app.http_over_ws_sockets
        if cap and counts.get(key, 0) >= cap:
            self.log.warning("http_over_websocket: refused a socket: %d already open", cap)
            raise web.HTTPError(
                429, reason=f"Too many http-over-websocket sockets open {holder} ({cap})"
            )
        counts[key] = counts.get(key, 0) + 1
        try:
            yield
        finally:
            counts[key] -= 1
            if not counts[key]:
                del counts[key]

    def upstream_headers(self) -> dict[str, str]:
        """Host and credentials for requests made on the client's behalf to this server."""
        # The client's Host (already accepted by check_host): the server then sees the
        # request as the client addressed it, and names its login cookie the same.
        headers = {"Host": self.request.host}
        if origin := self.request.headers.get("Origin"):
            # Made for that page: the server applies the page's origin rules (no terminals
            # or token API for Colab's origin) as if the page had asked directly.
            headers["Origin"] = origin
        if self.auth_token:
            headers["Authorization"] = f"token {self.auth_token}"
            return headers
        # Authenticated by a login cookie (no token known): forward it with its XSRF pair.
        if cookie := self.request.headers.get("Cookie"):
            headers["Cookie"] = cookie
        if xsrf := self.get_cookie("_xsrf"):
            headers["X-XSRFToken"] = xsrf
        return headers

    def send_frame(self, frame: dict[str, t.Any]) -> None:
        """Send a JSON frame; a socket closed meanwhile just drops it."""
        if self.ws_connection is None or self.ws_connection.is_closing():
            return
        text = json.dumps(frame)
        try:
            flushed = self.write_message(text)
        except websocket.WebSocketClosedError:
            return
        if self.outgoing is not None:
            self.outgoing.add(len(text), flushed)

    def count_connection(self, delta: int) -> None:
        """Keep ColabRemoteApp.http_over_ws_connections (shown by the status API) current."""
        if delta > 0 and self._counted or delta < 0 and not self._counted:
            return
        self._counted = delta > 0
        self.app.http_over_ws_connections += delta


class HttpOverWebSocketHandler(ColabWebSocketHandler):
    """`/http_over_websocket`: HTTP requests to this server, tunnelled as JSON frames."""

    def initialize(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Per-socket state: in-flight requests, the concurrency bound, the send window."""
        super().initialize(*args, **kwargs)
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)
        self._closed = False
        self.outgoing = SendWindow(MAX_QUEUED_BYTES)

    @ws_authenticated
    async def get(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Accept the WebSocket (authentication is checked first, then the socket cap)."""
        with self.socket_quota():
            await super().get(*args, **kwargs)

    def open(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Refuse an unsupported min_version; otherwise start serving."""
        super().open(*args, **kwargs)
        min_version = self.get_argument(MIN_VERSION_PARAM, None)
        problem = min_version_problem(min_version)
        # A close reason must fit a 125-byte control frame: ASCII, truncated.
        shown = (min_version or "")[:40].encode("ascii", "replace").decode()
        if problem == "unparsable":
            self._closed = True
            self.close(CLOSE_BAD_VERSION, f'Invalid "min_version" provided: {shown}')
            return
        if problem == "outdated":
            reason = (
                f"Requested version ({shown}) > Current version "
                f"({EXTENSION_VERSION}). Please upgrade this package."
            )
            self.log.error("Rejecting connection: %s", reason)
            self._closed = True
            self.close(CLOSE_BAD_VERSION, reason)
            return
        self.set_nodelay(True)
        self.count_connection(+1)

    async def on_message(self, message: str | bytes) -> None:
        """Start serving one request frame; wait (unread) while too many are in flight."""
        if self._closed:
            return
        await self._slots.acquire()
        if self._closed:
            self._slots.release()
            return
        task = asyncio.ensure_future(self._serve(message))
        self._tasks.add(task)
        task.add_done_callback(self._request_done)

    def _request_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    def on_close(self) -> None:
        """Abandon in-flight requests and update the connection count."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self.outgoing is not None:
            self.outgoing.release()
        self.count_connection(-1)

    async def _serve(self, message: str | bytes) -> None:
        try:
            request = parse_request(message)
        except ProtocolError as e:
            self.log.debug("http_over_websocket: refused frame: %s", shorten(str(e)))
            self.send_frame(e.frame)
            return
        emitter = ResponseEmitter(request.message_id, self.send_frame)
        try:
            async with request_slots(self.app):
                await self._fetch(request, emitter)
        except asyncio.CancelledError:
            raise
        except loopback_http.Abandoned:
            shown = f"{request.method} {shorten(request.path)}"
            why = f"the client took nothing for {self.app.http_over_ws_idle_timeout:g} s"
            self.log.warning("http_over_websocket: aborted %s: %s", shown, why)
            self.send_frame(error_frame(408, f"Request aborted: {why}.", request.message_id))
            return
        except Exception as e:
            shown = f"{request.method} {shorten(request.path)}"
            if isinstance(e, (loopback_http.UpstreamError, OSError)):
                self.log.error("Error when proxying request %s: %s", shown, e)
            else:
                self.log.exception("Uncaught error when proxying request %s", shown)
            self.send_frame(error_frame(500, UNCAUGHT_ERROR_TEXT, request.message_id))
            return
        emitter.finish()

    def _path(self, path: str) -> str:
        base_url = self.base_url
        # Colab sends paths from the server root; a path that already carries base_url
        # (a client that knows it) is kept as is.
        if not path.startswith(base_url):
            path = base_url.rstrip("/") + path
        return path

    async def _fetch(self, request: ProxyRequest, emitter: ResponseEmitter) -> None:
        headers = self.upstream_headers()
        if request.body is not None:
            # An explicit type: a server would parse a form-urlencoded body as form
            # arguments (where a "token" could hide).
            is_json = _JSON_START.match(request.body) is not None
            headers["Content-Type"] = "application/json" if is_json else "application/octet-stream"
        window = t.cast(SendWindow, self.outgoing)
        idle_timeout = self.app.http_over_ws_idle_timeout

        def body_chunk(chunk: bytes) -> t.Awaitable[bool] | None:
            emitter.body_chunk(chunk)
            # The next chunk is read from the server only once the client has room for it;
            # a client that takes nothing for idle_timeout abandons the request.
            return None if window.room() is None else window.wait_room(idle_timeout)

        # HTTP errors (404, 500) come back as responses; anything else raises.
        scheme, netloc = loopback_base(self.serverapp)
        await loopback_http.fetch(
            scheme,
            netloc,
            request.method,
            self._path(request.path),
            headers,
            request.body,
            emitter.start,
            body_chunk,
            connect_timeout=PROXY_CONNECT_TIMEOUT,
            header_timeout=PROXY_REQUEST_TIMEOUT,
            max_body_size=MAX_PROXIED_BODY,
        )


class DiagnoseHandler(ColabWebSocketHandler):
    """`/http_over_websocket/diagnose`: what Colab shows when it cannot connect.

    Unauthenticated, as in the original: Colab opens it after a failed connection to tell an
    outdated extension from a missing login. It reveals only the protocol version, and the
    origin policy still applies.
    """

    @allow_unauthenticated
    async def get(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Accept the WebSocket from any allowed origin, MAX_DIAGNOSE_SOCKETS at once."""
        with self.socket_quota("diagnose", MAX_DIAGNOSE_SOCKETS):
            await super().get(*args, **kwargs)

    @property
    def max_message_size(self) -> int:
        """Messages are message ids: far below the 10 MiB other sockets accept."""
        return MAX_DIAGNOSE_MESSAGE

    def initialize(self, *args: t.Any, **kwargs: t.Any) -> None:
        """The send window: answers wait for the client to take the previous ones."""
        super().initialize(*args, **kwargs)
        self.outgoing = SendWindow(MAX_QUEUED_BYTES)

    async def on_message(self, message: str | bytes) -> None:
        """Answer each message with the diagnostics, echoing it as the message_id; while the
        client leaves answers unread, the next message is not read (tornado waits for this)."""
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        problem = min_version_problem(self.get_argument(MIN_VERSION_PARAM, None))
        self.send_frame(
            {
                "message_id": message,
                "extension_version": EXTENSION_VERSION,
                "has_authentication_cookie": bool(self.get_cookie("_xsrf")),
                "is_outdated_extension": problem == "outdated",
            }
        )
        if self.outgoing is not None and (room := self.outgoing.room()) is not None:
            await room

    def on_close(self) -> None:
        """Let a waiting on_message go."""
        if self.outgoing is not None:
            self.outgoing.release()


class ProxiedWebSocketHandler(ColabWebSocketHandler):
    """`/http_over_websocket/proxied_ws/<path>`: a WebSocket relayed to `<path>` here."""

    _upstream: websocket.WebSocketClientConnection | None = None
    _relay: asyncio.Future[None] | None = None

    def _upstream_url(self) -> str:
        raw_path = self.request.path  # still percent-encoded, unlike the captured group
        rest = raw_path[raw_path.index(_PROXIED_WS_MARKER) + len(_PROXIED_WS_MARKER) :]
        # Our own parameters stay here; the rest (session_id...) goes upstream.
        query = [
            (k, v)
            for k, v in parse_qsl(self.request.query, keep_blank_values=True)
            if k not in ("token", AUTH_URL_PARAM)
        ]
        scheme, netloc = loopback_base(self.serverapp)
        url = f"{'wss' if scheme == 'https' else 'ws'}://{netloc}{self.base_url}{rest}"
        return f"{url}?{urlencode(query)}" if query else url

    @ws_authenticated
    async def get(self, path: str) -> None:
        """Within the socket cap, connect upstream first, so a refusal there (404, 403)
        refuses this handshake."""
        if path.startswith("http_over_websocket"):
            raise web.HTTPError(400, "refusing to proxy the proxy")
        with self.socket_quota():
            await self._relay_socket(path)

    async def _relay_socket(self, path: str) -> None:
        header = self.request.headers.get("Sec-WebSocket-Protocol", "")
        subprotocols = [s.strip() for s in header.split(",") if s.strip()]
        request = httpclient.HTTPRequest(
            self._upstream_url(),
            headers=self.upstream_headers(),
            validate_cert=False,
            connect_timeout=PROXY_CONNECT_TIMEOUT,
            request_timeout=PROXY_REQUEST_TIMEOUT,
        )
        try:
            self._upstream = await websocket.websocket_connect(
                request,
                subprotocols=subprotocols or None,
                max_message_size=MAX_UPSTREAM_WS_MESSAGE,
            )
        except httpclient.HTTPClientError as e:
            code = e.code if 400 <= e.code < 599 else 502
            raise web.HTTPError(code, "proxied WebSocket refused: %s", e) from e
        except Exception as e:
            self.log.exception("Uncaught error when proxying WebSocket to %s", path)
            raise web.HTTPError(502, "proxied WebSocket failed") from e
        try:
            await super().get(path)
        finally:
            if self._relay is None:  # our handshake failed: drop the upstream too
                self._upstream.close()

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        """Agree on the subprotocol the upstream chose (e.g. the kernel's v1 protocol)."""
        chosen = self._upstream.selected_subprotocol if self._upstream else None
        return chosen if chosen in subprotocols else None

    def open(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Turn off Nagle on both legs and start relaying upstream frames."""
        super().open()
        self.set_nodelay(True)
        assert self._upstream is not None
        stream = getattr(self._upstream.protocol, "stream", None)
        if stream is not None:
            stream.set_nodelay(True)
        self.count_connection(+1)
        self._relay = asyncio.ensure_future(self._relay_upstream(self._upstream))

    async def _relay_upstream(self, upstream: websocket.WebSocketClientConnection) -> None:
        while True:
            message = await upstream.read_message()
            if message is None:
                break
            try:
                await self.write_message(message, binary=isinstance(message, bytes))
            except websocket.WebSocketClosedError:
                return
        self.close(*sendable_close(upstream.close_code, upstream.close_reason))

    async def on_message(self, message: str | bytes) -> None:
        """Forward a client frame upstream, text or binary as received."""
        if self._upstream is None:
            return
        try:
            await self._upstream.write_message(message, binary=isinstance(message, bytes))
        except websocket.WebSocketClosedError:
            pass  # the relay closes this socket with the upstream's code

    def on_close(self) -> None:
        """Close upstream with the client's code."""
        self.count_connection(-1)
        if self._upstream is not None:
            self._upstream.close(*sendable_close(self.close_code, self.close_reason))
        if self._relay is not None and not self._relay.done():
            self._relay.cancel()


#: (path regex under base_url, handler) pairs, added by ColabRemoteApp.initialize_handlers.
HTTP_OVER_WS_HANDLERS: list[tuple[str, type[web.RequestHandler]]] = [
    (r"/http_over_websocket", HttpOverWebSocketHandler),
    (r"/http_over_websocket/diagnose", DiagnoseHandler),
    (r"/http_over_websocket/proxied_ws/(.+)", ProxiedWebSocketHandler),
]
