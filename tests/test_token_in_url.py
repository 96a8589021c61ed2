"""A token in a URL: never logged however it is spelled, never leaked as a Referer, and out of
the browser's address bar after the first page load (issue 10, item 10)."""

from __future__ import annotations

import logging

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

pytestmark = pytest.mark.server

NAVIGATE = {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}


async def _get(url: str, headers: dict[str, str] | None = None):
    try:
        return await AsyncHTTPClient().fetch(url, headers=headers or {}, follow_redirects=False)
    except HTTPClientError as e:
        if e.response is None:
            raise
        return e.response


@pytest.mark.parametrize("name", ["%74oken", "to%6Ben", "%74%6F%6B%65%6E"])
async def test_percent_encoded_token_name_is_masked_in_logs(
    http_server, jp_http_port, jp_base_url, token, caplog, name
):
    """`?%74oken=` authenticates (tornado decodes the name), so the log must mask it too."""
    url = f"http://127.0.0.1:{jp_http_port}{jp_base_url}api/kernels?{name}={token}&x=1"
    with caplog.at_level(logging.DEBUG):
        ok = await _get(url)
        bad = await _get(url.replace(token, token[::-1]) + "&missing=1")
        await _get(url.replace("api/kernels", "api/nowhere"))
    assert ok.code == 200 and bad.code == 403
    assert caplog.text, "nothing was logged: the test would prove nothing"
    assert "api/kernels" in caplog.text
    assert token not in caplog.text and token[::-1] not in caplog.text


async def test_pages_send_a_referrer_policy(jp_fetch, http_server, jp_http_port, jp_base_url):
    """Pages and API answers keep their address (and the token in it) from other sites."""
    login = await _get(f"http://127.0.0.1:{jp_http_port}{jp_base_url}login")
    assert login.code == 200 and login.headers["Referrer-Policy"] == "same-origin"
    for parts in (("api", "kernels"), ("colabremote", "api", "status")):
        r = await jp_fetch(*parts)
        assert r.headers["Referrer-Policy"] == "same-origin", parts
    # The landing page is stricter still.
    r = await jp_fetch("colabremote")
    assert r.headers["Referrer-Policy"] == "no-referrer"


async def test_browser_navigation_drops_the_token_from_the_address(
    http_server, jp_http_port, jp_base_url, token
):
    """A browser opening `PAGE?token=` is logged in by cookie and sent to PAGE without it;
    the other query parameters stay."""
    base = f"http://127.0.0.1:{jp_http_port}{jp_base_url}"
    r = await _get(f"{base}colabremote?a=1&token={token}&b=2", NAVIGATE)
    assert r.code == 302
    assert r.headers["Location"] == f"{jp_base_url}colabremote?a=1&b=2"
    cookie = next(
        c.split(";")[0] for c in r.headers.get_list("Set-Cookie") if c.startswith("username-")
    )
    page = await _get(base + "colabremote?a=1&b=2", {**NAVIGATE, "Cookie": cookie})
    assert page.code == 200 and b"Colab local runtime" in page.body
    # A percent-encoded name is a token too, and goes as well.
    r = await _get(f"{base}colabremote?%74oken={token}", NAVIGATE)
    assert r.code == 302 and r.headers["Location"] == f"{jp_base_url}colabremote"


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("colabremote", {}),  # a script (curl, VS Code): no Sec-Fetch headers
        ("colabremote", {"Sec-Fetch-Mode": "cors"}),  # a page's fetch (Colab's)
        ("api/colab/build-info", NAVIGATE),  # an API opened in a tab
        ("api/kernels", {"Sec-Fetch-Mode": "cors", "Origin": "https://colab.research.google.com"}),
    ],
)
async def test_token_urls_for_colab_and_scripts_are_served_as_before(
    http_server, jp_http_port, jp_base_url, token, path, headers
):
    """Colab reads the token from the pasted URL and sends it in its own requests: those are
    answered directly, never redirected."""
    url = f"http://127.0.0.1:{jp_http_port}{jp_base_url}{path}?token={token}"
    r = await _get(url, headers)
    assert r.code == 200


async def test_no_redirect_off_the_server(http_server, jp_http_port, jp_base_url, token):
    """A path starting with `//` must not turn the redirect into one to another host."""
    r = await _get(f"http://127.0.0.1:{jp_http_port}//evil.example.com/?token={token}", NAVIGATE)
    location = r.headers.get("Location", "")
    assert not location.startswith("//"), location
