"""One HTTP/1.1 request to this server, its response body read only as fast as it is consumed.

tornado's AsyncHTTPClient (before tornado 6.6) reads a streamed body as fast as the server
sends it, whatever its streaming_callback does: a proxy whose client stops reading buffers the
whole body. Here tornado's own HTTP/1.1 connection is driven directly; it reads the next body
chunk only once the awaitable returned for the previous one is done (and drops the response if
that awaitable gives False).
"""

from __future__ import annotations

import asyncio
import ssl
import typing as t
from collections.abc import Awaitable, Callable

from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpclient import TCPClient

#: Methods whose request carries a body: sent with Content-Length 0 when there is none.
_BODY_METHODS = ("POST", "PUT", "PATCH")


class UpstreamError(Exception):
    """The server closed the connection or sent no complete response."""


class Abandoned(Exception):
    """The consumer gave up on the response (a chunk's awaitable gave False)."""


class _Delegate(httputil.HTTPMessageDelegate):
    """Hands the response start line, headers and body chunks to the caller."""

    def __init__(
        self,
        on_headers: Callable[[int, str, httputil.HTTPHeaders], None],
        on_chunk: Callable[[bytes], Awaitable[bool | None] | None],
        stream: IOStream,
    ) -> None:
        self._on_headers = on_headers
        self._on_chunk = on_chunk
        self._stream = stream
        self.started = False
        self.finished = False
        self.abandoned = False
        self.cancelled = False

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> None:
        """Pass the status and headers on (a 100 Continue never comes: none is asked for)."""
        start = t.cast(httputil.ResponseStartLine, start_line)
        self.started = True
        self._on_headers(start.code, start.reason, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        """Pass a body chunk on; the connection reads no further until its awaitable is done."""
        waiting = self._on_chunk(chunk)
        return None if waiting is None else self._wait(waiting)

    async def _wait(self, waiting: Awaitable[bool | None]) -> None:
        # Never by raising: tornado logs an exception from here (a cancellation too) as
        # uncaught. Closing the connection makes its next read fail instead, which ends
        # read_response; fetch() then raises what was meant.
        try:
            give_up = await waiting is False
        except asyncio.CancelledError:
            self.cancelled = give_up = True
        if give_up:
            self.abandoned = True
            self._stream.close()

    def finish(self) -> None:
        """The body is complete."""
        self.finished = True


def _unverified_tls() -> ssl.SSLContext:
    # Our own listening address: there is nothing to authenticate.
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def fetch(
    scheme: str,
    netloc: str,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None,
    on_headers: Callable[[int, str, httputil.HTTPHeaders], None],
    on_chunk: Callable[[bytes], Awaitable[bool | None] | None],
    *,
    connect_timeout: float,
    header_timeout: float,
    max_body_size: int,
) -> None:
    """Send one request to `scheme://netloc` and stream its response into the callbacks;
    raise UpstreamError if no complete response comes back, Abandoned if the consumer gave up
    on it. The body has no time limit: its pace is the consumer's."""
    host, port = httputil.split_host_and_port(netloc)
    if port is None:
        port = 443 if scheme == "https" else 80
    stream = await TCPClient().connect(
        host.strip("[]"),
        port,
        ssl_options=_unverified_tls() if scheme == "https" else None,
        timeout=connect_timeout,
    )
    try:
        stream.set_nodelay(True)
        connection = HTTP1Connection(
            stream,
            True,
            HTTP1ConnectionParameters(
                no_keep_alive=True,
                header_timeout=header_timeout,
                max_body_size=max_body_size,
                decompress=False,  # relay the body as the server sends it
            ),
        )
        request_headers = httputil.HTTPHeaders(headers)
        request_headers["Connection"] = "close"
        if body is not None or method in _BODY_METHODS:
            request_headers["Content-Length"] = str(len(body or b""))
        start_line = httputil.RequestStartLine(method, path, "HTTP/1.1")
        connection.write_headers(start_line, request_headers)
        if body:
            connection.write(body)
        connection.finish()
        delegate = _Delegate(on_headers, on_chunk, stream)
        try:
            await connection.read_response(delegate)
        except StreamClosedError:
            if not delegate.abandoned:
                raise
        if delegate.cancelled:
            raise asyncio.CancelledError()
        if delegate.abandoned:
            raise Abandoned()
        if not delegate.finished:
            what = "an incomplete response" if delegate.started else "no response"
            raise UpstreamError(f"the server sent {what}")
    finally:
        stream.close()
