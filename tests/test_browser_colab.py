"""Acceptance tests in a real browser: a fake https://colab.research.google.com page
connects to a real `jupyter colabremote serve`, as Colab's "Connect to a local runtime" does.

Headless Chromium (Debian's, driven by chromedriver) loads a tiny page served over https
from this test, under the name colab.research.google.com (host-resolver mapping, a
self-signed certificate) and counted as a *public* site, so Chrome's Local Network Access
(LNA) rules apply exactly as they do to the real Colab reaching localhost. The user's
"Allow" answer to Chrome's local-network prompt is given through CDP
(`Browser.grantPermissions`, permission `loopbackNetwork`). Without it, headless Chromium
denies the prompt at once and blocks the request before it leaves the browser.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid

import pytest

from tests.harness.browser import Browser, PageServer, browser_available, chromium, serve_page

COLAB_HOST = "colab.research.google.com"
EVIL_HOST = "evil.example.com"
XSSI_PREFIX = ")]}'\n"

_missing = browser_available()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.skipif(_missing is not None, reason=f"no browser to test with: {_missing}"),
    pytest.mark.timeout(120),
]


# -- helpers ---------------------------------------------------------------------------


def api(rt, method: str, path: str, origin: str | None = None, body: bytes | None = None):
    """A direct request to the runtime (token in the header): (status, headers, text)."""
    headers = {"Authorization": f"token {rt.token}"}
    if origin:
        headers["Origin"] = origin
    if body is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(rt.base + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode(errors="replace")


def kernel_ids(rt) -> set[str]:
    status, _, text = api(rt, "GET", "/api/kernels")
    assert status == 200, text
    return {k["id"] for k in json.loads(text)}


def shutdown_kernels(rt) -> None:
    """End every kernel through the REST API (the fixture kills stragglers anyway)."""
    if rt.proc.poll() is not None:
        return
    for kid in kernel_ids(rt):
        api(rt, "DELETE", f"/api/kernels/{kid}")


def wait_for_log(rt, needle: str, timeout: float = 5.0) -> str:
    """The runtime log once it contains `needle` (bounded wait)."""
    end = time.monotonic() + timeout
    while True:
        log = rt.log()
        if needle in log or time.monotonic() > end:
            return log
        time.sleep(0.05)


def xssi_json(text: str):
    """Strip Colab's anti-XSSI prefix (asserting it is there) and parse the JSON."""
    assert text.startswith(XSSI_PREFIX), f"no XSSI prefix: {text[:80]!r}"
    return json.loads(text[len(XSSI_PREFIX) :])


def pasted(browser: Browser, url: str) -> tuple[str, str]:
    """What the page makes of the URL a user pastes: (server origin, token)."""
    origin, token = browser.driver.execute_script(
        "const u = new URL(arguments[0]); return [u.origin, u.searchParams.get('token')];", url
    )
    return origin, token


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture
def rt(runtime):
    """The runtime; every kernel is shut down through the REST API afterwards."""
    try:
        yield runtime
    finally:
        shutdown_kernels(runtime)


@pytest.fixture
def colab_page(tmp_path):
    with serve_page(COLAB_HOST, tmp_path / "certs") as page:
        yield page


@pytest.fixture
def evil_page(tmp_path):
    with serve_page(EVIL_HOST, tmp_path / "certs") as page:
        yield page


@pytest.fixture
def browser(colab_page: PageServer, evil_page: PageServer):
    with chromium([colab_page, evil_page]) as b:
        yield b


# -- tests -----------------------------------------------------------------------------


def test_colab_is_blocked_until_the_user_allows_local_network_access(rt, browser, colab_page):
    """Until the user clicks "Allow" on Chrome's local-network prompt, Colab cannot connect:
    Chrome itself blocks the fetch and the WebSocket, and nothing reaches the runtime.
    After "Allow", the very same requests get through.

    This also proves the fake page really counts as a public site reaching loopback.
    """
    browser.open(colab_page.origin)
    base, token = pasted(browser, rt.url)
    marker = uuid.uuid4().hex
    probe = f"{base}/api/lna-probe-{marker}?token={token}"
    gone_kernel = str(uuid.uuid4())
    ws_url = (
        f"ws://localhost:{rt.port}/api/kernels/{gone_kernel}/channels?session_id=s&token={token}"
    )

    blocked = browser.request(f"{base}/api/colab/build-info?token={token}", ms=5000)
    assert "error" in blocked, blocked
    blocked_probe = browser.request(probe, ms=5000)
    assert "error" in blocked_probe, blocked_probe
    ws = browser.execute(ws_url, "1+1", ms=5000)
    assert not ws["opened"], ws

    # The browser says why: Local Network Access, not the server.
    build_info = browser.exchanges("/api/colab/build-info")
    assert build_info and build_info[-1].cors_error == "LocalNetworkAccessPermissionDenied"
    assert build_info[-1].status is None
    console = "\n".join(browser.console())
    assert "ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS" in console, console
    # ...and the runtime never saw those requests.
    time.sleep(0.3)
    log = rt.log()
    assert marker not in log and gone_kernel not in log

    browser.grant_loopback(colab_page.origin)

    allowed = browser.request(f"{base}/api/colab/build-info?token={token}", ms=5000)
    assert allowed.get("status") == 200, allowed
    reached = browser.request(probe, ms=5000)
    assert reached.get("status") == 404, reached
    ws = browser.execute(ws_url, "1+1", ms=5000)
    assert not ws["opened"]  # the kernel does not exist, but the handshake got there:
    log = wait_for_log(rt, gone_kernel)
    assert f"lna-probe-{marker}" in log and gone_kernel in log


def test_colab_connects_runs_code_and_reads_resources(rt, browser, colab_page):
    """The whole connection as Colab makes it, after the user allowed local network access:
    the build-info probe, kernelspecs, starting a kernel, running `1+1` over the kernel
    WebSocket (the user sees `2`), and the RAM/Disk/GPU gauges' figures.
    """
    browser.open(colab_page.origin)
    browser.grant_loopback(colab_page.origin)
    base, token = pasted(browser, rt.url)
    assert base == f"http://localhost:{rt.port}"

    probe = browser.request(f"{base}/api/colab/build-info?token={token}")
    assert probe.get("status") == 200, probe
    assert probe["headers"]["content-type"].startswith("application/json")
    assert "release_tag" in xssi_json(probe["text"])
    seen = browser.exchanges("/api/colab/build-info")[-1]
    assert seen.response_headers["access-control-allow-origin"] == colab_page.origin
    assert seen.response_headers["access-control-allow-credentials"] == "true"

    specs = browser.request(f"{base}/api/kernelspecs?token={token}")
    assert specs.get("status") == 200, specs
    specs = json.loads(specs["text"])
    assert specs["default"] in specs["kernelspecs"]

    started = browser.request(
        f"{base}/api/kernels?token={token}",
        {
            "method": "POST",
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps({"name": specs["default"]}),
        },
        ms=20000,
    )
    assert started.get("status") == 201, started
    kernel_id = json.loads(started["text"])["id"]
    assert kernel_id in kernel_ids(rt)

    session = uuid.uuid4().hex
    ws_url = (
        f"ws://localhost:{rt.port}/api/kernels/{kernel_id}/channels"
        f"?session_id={session}&token={token}"
    )
    run = browser.execute(ws_url, "1+1", ms=30000)
    assert run["opened"], run
    assert run.get("error") is None, run
    assert run["reply"]["status"] == "ok", run
    assert run["executeResult"]["data"]["text/plain"] == "2", run

    res = browser.request(f"{base}/api/colab/resources?token={token}")
    assert res.get("status") == 200, res
    stats = xssi_json(res["text"])
    memory = stats["memory"]
    assert memory["totalBytes"] > 0 and 0 <= memory["freeBytes"] <= memory["totalBytes"]
    kernels = {k["uuid"]: k["usedBytes"] for k in memory["kernels"]}
    assert kernels.get(kernel_id, 0) > 0, memory
    assert stats["disks"], stats
    for disk in stats["disks"]:
        fs = disk["filesystem"]
        assert fs["label"] and fs["totalBytes"] > 0 and 0 <= fs["usedBytes"] <= fs["totalBytes"]
    assert isinstance(stats["gpus"], list)  # no GPU on the test machine: usually empty
    for gpu in stats["gpus"]:
        assert {"name", "memoryUsedBytes", "memoryTotalBytes", "gpuUtilization"} <= set(gpu)

    drive = browser.request(f"{base}/api/colab/drive?token={token}")
    assert drive.get("status") == 200 and xssi_json(drive["text"]) == {"dfs": []}

    stopped = browser.request(f"{base}/api/kernels/{kernel_id}?token={token}", {"method": "DELETE"})
    assert stopped.get("status") == 204, stopped
    assert kernel_id not in kernel_ids(rt)


def test_token_in_authorization_header_passes_the_cors_preflight(rt, browser, colab_page):
    """Colab may send the token as `Authorization: token ...` instead of in the URL; that
    header makes the browser send a CORS preflight first, which the runtime must answer
    for Colab's origin, or the user cannot connect.
    """
    browser.open(colab_page.origin)
    browser.grant_loopback(colab_page.origin)
    base, token = pasted(browser, rt.url)
    auth = {"Authorization": f"token {token}"}

    without = browser.request(f"{base}/api/kernelspecs")
    assert without.get("status") == 403, without  # the header is what authenticates

    specs = browser.request(f"{base}/api/kernelspecs", {"headers": auth})
    assert specs.get("status") == 200, specs
    assert "kernelspecs" in json.loads(specs["text"])

    preflights = [x for x in browser.exchanges("/api/kernelspecs") if x.preflight]
    assert preflights, "the Authorization header should have forced a preflight"
    pre = preflights[-1]
    assert pre.method == "OPTIONS"
    assert pre.request_headers["origin"] == colab_page.origin
    assert "authorization" in pre.request_headers["access-control-request-headers"].lower()
    assert pre.status is not None and 200 <= pre.status < 300, pre
    assert pre.response_headers["access-control-allow-origin"] == colab_page.origin
    assert pre.response_headers["access-control-allow-credentials"] == "true"
    allowed = pre.response_headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed, pre

    # A JSON POST with the header: a preflight for POST + Content-Type, then the kernel.
    started = browser.request(
        f"{base}/api/kernels",
        {
            "method": "POST",
            "headers": {**auth, "Content-Type": "application/json"},
            "body": "{}",
        },
        ms=20000,
    )
    assert started.get("status") == 201, started
    kernel_id = json.loads(started["text"])["id"]
    stopped = browser.request(
        f"{base}/api/kernels/{kernel_id}", {"method": "DELETE", "headers": auth}
    )
    assert stopped.get("status") == 204, stopped
    post_preflight = [x for x in browser.exchanges("/api/kernels") if x.preflight]
    assert {x.request_headers.get("access-control-request-method") for x in post_preflight} >= {
        "POST",
        "DELETE",
    }


def test_another_site_is_refused_even_with_the_token(rt, browser, evil_page, colab_page):
    """A page on any other site, even one that knows the token and that the user allowed
    onto the local network, can neither call the API nor reach a kernel: the runtime
    refuses it (403, no CORS headers), and no kernel gets started.
    """
    # A kernel the user's own Colab session runs, which the other site tries to reach.
    status, _, text = api(rt, "POST", "/api/kernels", body=b"{}")
    assert status == 201, text
    victim = json.loads(text)["id"]

    browser.open(evil_page.origin)
    browser.grant_loopback(evil_page.origin)
    base, token = pasted(browser, rt.url)

    probe = browser.request(f"{base}/api/colab/build-info?token={token}")
    assert "error" in probe, probe
    specs = browser.request(f"{base}/api/kernelspecs?token={token}")
    assert "error" in specs, specs
    # A "simple" POST (no preflight): the request does reach the server.
    simple = browser.request(f"{base}/api/kernels?token={token}", {"method": "POST", "body": "{}"})
    assert "error" in simple, simple
    with_header = browser.request(
        f"{base}/api/kernels",
        {
            "method": "POST",
            "headers": {"Authorization": f"token {token}", "Content-Type": "application/json"},
            "body": "{}",
        },
    )
    assert "error" in with_header, with_header
    ws_url = f"ws://localhost:{rt.port}/api/kernels/{victim}/channels?session_id=s&token={token}"
    ws = browser.execute(ws_url, "1+1", ms=10000)
    assert not ws["opened"] and ws["executeResult"] is None, ws

    # Not the browser's LNA block: the runtime answered, and refused.
    for x in browser.exchanges("localhost"):
        assert x.cors_error != "LocalNetworkAccessPermissionDenied", x
        assert "access-control-allow-origin" not in x.response_headers, x
    answered = [x for x in browser.exchanges("/api/colab/build-info") if not x.preflight]
    assert answered and answered[-1].status == 403, answered
    preflight = [x for x in browser.exchanges("/api/kernels") if x.preflight]
    assert preflight, "the Authorization header should have forced a preflight"
    console = "\n".join(browser.console())
    assert "Unexpected response code: 403" in console, console

    log = wait_for_log(rt, f"/api/kernels/{victim}/channels")
    refusal = f"Refusing request from origin {evil_page.origin} to "
    for path in ("/api/colab/build-info", "/api/kernelspecs", "/api/kernels"):
        assert refusal + path + "\n" in log or refusal + path + "\r" in log, path
    assert refusal + f"/api/kernels/{victim}/channels" in log

    # The same request straight to the server: 403 for that Origin, 200 for Colab's.
    status, headers, _ = api(rt, "GET", "/api/kernelspecs", origin=evil_page.origin)
    assert status == 403 and headers.get("Access-Control-Allow-Origin") is None
    status, headers, _ = api(rt, "GET", "/api/kernelspecs", origin=colab_page.origin)
    assert status == 200 and headers.get("Access-Control-Allow-Origin") == colab_page.origin

    assert kernel_ids(rt) == {victim}, "the other site started a kernel"
    status, _, text = api(rt, "GET", f"/api/kernels/{victim}")
    assert status == 200 and json.loads(text)["connections"] == 0, text


def test_runtime_log_never_shows_the_token(rt, browser, colab_page, evil_page):
    """A user who pastes the runtime's log into a bug report must not be handing out a
    live token. Colab reconnecting to a kernel that is gone, and another site's refused
    POST, both put the URL (with `?token=`) into warning lines of the log.
    """
    browser.open(colab_page.origin)
    browser.grant_loopback(colab_page.origin)
    gone = str(uuid.uuid4())
    ws = browser.execute(
        f"ws://localhost:{rt.port}/api/kernels/{gone}/channels?session_id=s&token={rt.token}",
        "1+1",
        ms=5000,
    )
    assert not ws["opened"]
    browser.open(evil_page.origin)
    browser.grant_loopback(evil_page.origin)
    refused = browser.request(
        f"http://localhost:{rt.port}/api/kernels?token={rt.token}", {"method": "POST", "body": "{}"}
    )
    assert "error" in refused
    log = wait_for_log(rt, "Refusing request from origin")
    assert gone in log and "Refusing request" in log  # both requests were logged
    leaks = [line for line in log.splitlines() if rt.token in line]
    assert not leaks, "\n".join(leaks)


def test_colab_page_cannot_open_a_shell_or_take_over_tokens(rt, browser, colab_page):
    """Least privilege for Colab's origin (issue 10, item 11): a script on Colab's page (an
    XSS there) that holds the token still runs kernels, but cannot start a terminal, open a
    terminal's WebSocket, or list, rotate or revoke tokens. The companion (no Origin) can.
    """
    status, _, text = api(rt, "POST", "/api/terminals", body=b"{}")
    assert status == 200, text
    terminal = json.loads(text)["name"]
    browser.open(colab_page.origin)
    browser.grant_loopback(colab_page.origin)
    base, token = pasted(browser, rt.url)
    assert browser.request(f"{base}/api/kernelspecs?token={token}").get("status") == 200
    for method, path in (
        ("POST", "/api/terminals"),
        ("GET", "/colabremote/api/tokens"),
        ("POST", "/colabremote/api/tokens/test/rotate"),
        ("DELETE", "/colabremote/api/tokens/test"),
    ):
        init = {"method": method, **({"body": "{}"} if method == "POST" else {})}
        got = browser.request(f"{base}{path}?token={token}", init)
        assert got.get("status") == 403, (method, path, got)
    ws_url = f"ws://localhost:{rt.port}/terminals/websocket/{terminal}?token={token}"
    ws = browser.execute(ws_url, "id", ms=10000)
    assert not ws["opened"], ws
    # Nothing changed: one terminal, the token neither rotated nor revoked.
    status, _, text = api(rt, "GET", "/api/terminals")
    assert status == 200 and [t["name"] for t in json.loads(text)] == [terminal], text
    status, _, text = api(rt, "GET", "/colabremote/api/tokens")
    assert status == 200 and [t["name"] for t in json.loads(text)["tokens"]] == ["test"], text


@pytest.mark.parametrize("page", ["/", "/colabremote"])
def test_opening_the_url_in_a_tab_drops_the_token_from_the_address_bar(rt, browser, page):
    """A user who opens the runtime's URL (`http://localhost:PORT/?token=...`) in a tab ends
    up logged in on the same page without the token in the address bar (nor in history, nor
    in a Referer). `/` leads to JupyterLab here, whose page tidies the address itself (and
    keeps the token in its navigation entry for the launcher panel's URL, so the server does
    not redirect it); on the runtime's own page (where `/` leads without JupyterLab) the
    server redirects before the page loads. Colab reads the token from the pasted text.
    """
    driver = browser.driver
    driver.get(f"http://localhost:{rt.port}{page}?token={rt.token}")
    end = time.monotonic() + 20
    while "token=" in driver.current_url and time.monotonic() < end:
        time.sleep(0.05)
    url = driver.current_url
    assert "token" not in url, url
    assert url.startswith(f"http://localhost:{rt.port}/") and "/login" not in url, url
    # Logged in by the cookie set on the way: the page's own request needs no token.
    status = driver.execute_async_script(
        "const done = arguments[0];"
        "fetch('/api/kernels').then(r => done(r.status)).catch(e => done(String(e)));"
    )
    assert status == 200
    assert rt.token not in driver.execute_script("return location.href + document.referrer")
