"""Who may call the runtime: Colab's origins, the server's own pages, and scripts without Origin."""

from __future__ import annotations

import json

import pytest
from tornado.httpclient import HTTPClientError
from tornado.websocket import WebSocketClosedError

from tests.harness.runtime_api import COLAB_ORIGIN

#: Exercises the jupyter_server extension: also run at the lowest dependency versions.
pytestmark = pytest.mark.server

EVIL = "https://evil.example.com"


async def test_colab_origin_with_token_gets_cors_headers(jp_fetch):
    """Colab's page can read responses: its origin is echoed, with credentials allowed."""
    r = await jp_fetch("api", "kernelspecs", headers={"Origin": COLAB_ORIGIN})
    assert r.code == 200
    assert r.headers["Access-Control-Allow-Origin"] == COLAB_ORIGIN
    assert r.headers["Access-Control-Allow-Credentials"] == "true"
    assert "python3" in json.loads(r.body)["kernelspecs"]


async def test_colab_sandbox_origin_allowed(jp_fetch):
    """The colab.sandbox origin that Colab's own image allows is accepted too."""
    origin = "https://colab.sandbox.google.com"
    r = await jp_fetch("api", "colab", "build-info", headers={"Origin": origin})
    assert r.headers["Access-Control-Allow-Origin"] == origin


@pytest.mark.parametrize(
    "origin",
    [EVIL, "https://colab.research.google.com.evil.com", "http://colab.research.google.com"],
)
# jupyter_server warns when allow_origin_pat matches only a prefix of the Origin, which the
# look-alike origin does on purpose (both refuse it).
@pytest.mark.filterwarnings("ignore:allow_origin_pat .* only matched the request origin")
async def test_foreign_origin_refused_even_with_valid_token(jp_fetch, origin):
    """Stricter than stock jupyter_server: a valid token does not let another site in."""
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("api", "kernels", headers={"Origin": origin})
    assert e.value.code == 403
    assert "Access-Control-Allow-Origin" not in e.value.response.headers


async def test_no_origin_with_token_works(jp_fetch):
    """curl, VS Code and the companion send no Origin and keep working with the token."""
    r = await jp_fetch("api", "kernels")
    assert r.code == 200
    assert "Access-Control-Allow-Origin" not in r.headers


async def test_same_origin_pages_work(jp_fetch, jp_http_port):
    """JupyterLab served by this runtime sends its own Origin on POSTs: that is allowed."""
    r = await jp_fetch("api", "kernels", headers={"Origin": f"http://127.0.0.1:{jp_http_port}"})
    assert r.code == 200


async def test_no_token_refused(jp_fetch):
    """Without a token, even Colab's origin gets 403."""
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("api", "kernels", headers={"Origin": COLAB_ORIGIN, "Authorization": ""})
    assert e.value.code == 403


async def test_preflight_answered_for_colab(jp_fetch):
    """Colab's CORS preflight gets Allow-Origin, credentials, the requested headers and PNA."""
    r = await jp_fetch(
        "api",
        "colab",
        "build-info",
        method="OPTIONS",
        headers={
            "Origin": COLAB_ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, x-colab-tunnel",
            "Access-Control-Request-Private-Network": "true",
            "Authorization": "",
        },
    )
    assert r.code in (200, 204)
    assert r.headers["Access-Control-Allow-Origin"] == COLAB_ORIGIN
    assert r.headers["Access-Control-Allow-Credentials"] == "true"
    assert r.headers["Access-Control-Allow-Private-Network"] == "true"
    assert "x-colab-tunnel" in r.headers["Access-Control-Allow-Headers"]


async def test_preflight_from_foreign_origin_gets_no_cors(jp_fetch):
    """A preflight from another site gets no CORS grant, so the browser blocks the request."""
    r = await jp_fetch(
        "api",
        "kernels",
        method="OPTIONS",
        headers={
            "Origin": EVIL,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
            "Authorization": "",
        },
        raise_error=False,
    )
    assert "Access-Control-Allow-Origin" not in r.headers
    assert "Access-Control-Allow-Private-Network" not in r.headers


async def _start_kernel(jp_fetch) -> str:
    r = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
    return json.loads(r.body)["id"]


async def test_kernel_websocket_origin_rules(jp_fetch, jp_ws_fetch):
    """The kernel WebSocket opens for Colab's origin and is refused for another site."""
    kid = await _start_kernel(jp_fetch)
    try:
        ws = await jp_ws_fetch("api", "kernels", kid, "channels", headers={"Origin": COLAB_ORIGIN})
        ws.close()
        with pytest.raises((HTTPClientError, WebSocketClosedError)) as e:
            await jp_ws_fetch("api", "kernels", kid, "channels", headers={"Origin": EVIL})
        if isinstance(e.value, HTTPClientError):
            assert e.value.code == 403
    finally:
        await jp_fetch("api", "kernels", kid, method="DELETE")


async def _code(jp_fetch, *parts: str, origin: str | None, method: str = "GET", body=None):
    headers = {"Origin": origin} if origin else {}
    try:
        return (await jp_fetch(*parts, method=method, body=body, headers=headers)).code
    except HTTPClientError as e:
        return e.code


#: What a page on Colab's origin must not reach: a shell, the token, forward and ports API.
OWN_ORIGIN_ONLY = [
    ("POST", ("api", "terminals"), "{}"),
    ("GET", ("api", "terminals"), None),
    ("GET", ("colabremote", "api", "tokens"), None),
    ("POST", ("colabremote", "api", "tokens", "test", "rotate"), ""),
    ("DELETE", ("colabremote", "api", "tokens", "test"), None),
    ("PUT", ("colabremote", "api", "forward"), '{"local_port": 9000}'),
    ("GET", ("colabremote", "api", "ports"), None),
    ("PUT", ("colabremote", "api", "ports"), '{"client": "x", "forwards": []}'),
]


@pytest.mark.parametrize(("method", "parts", "body"), OWN_ORIGIN_ONLY)
async def test_colab_origin_gets_no_shell_or_token_api(jp_fetch, jp_http_port, method, parts, body):
    """Least privilege (issue 10, item 11): even with a valid token, Colab's origin (an XSS
    there) cannot open a terminal or touch tokens and forwards; the companion (no Origin) and
    JupyterLab (the server's own origin) still can."""
    assert await _code(jp_fetch, *parts, origin=COLAB_ORIGIN, method=method, body=body) == 403
    # Nothing happened: the token still works, Colab still reaches what it needs.
    assert await _code(jp_fetch, "api", "kernelspecs", origin=COLAB_ORIGIN) == 200
    own = f"http://127.0.0.1:{jp_http_port}"
    if method in ("GET", "PUT"):
        assert await _code(jp_fetch, *parts, origin=own, method=method, body=body) in (200, 204)
        assert await _code(jp_fetch, *parts, origin=None, method=method, body=body) in (200, 204)


async def test_colab_origin_gets_no_terminal_websocket(jp_fetch, jp_ws_fetch):
    """The terminal WebSocket is refused to Colab's origin, opened for a script."""
    name = json.loads((await jp_fetch("api", "terminals", method="POST", body="{}")).body)["name"]
    with pytest.raises((HTTPClientError, WebSocketClosedError)) as e:
        await jp_ws_fetch("terminals", "websocket", name, headers={"Origin": COLAB_ORIGIN})
    if isinstance(e.value, HTTPClientError):
        assert e.value.code == 403
    ws = await jp_ws_fetch("terminals", "websocket", name)
    ws.close()
