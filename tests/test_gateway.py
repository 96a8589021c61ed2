"""Kernels on a Jupyter Kernel Gateway: a real gateway on loopback (token in KG_AUTH_TOKEN) and
a real `jupyter colabremote serve --GatewayClient.url=...` whose token comes from its
environment (JUPYTER_GATEWAY_AUTH_TOKEN), as the remote agent starts it.

Covered: kernels start, run, interrupt and restart on the gateway (not under the runtime);
status lists the gateway's kernels (no memory figure) and whether the gateway is reachable;
Colab's page (headless Chromium) uses them; the gateway going away gives clear JSON errors in
status and in the kernel requests, and everything recovers when it returns (restart of the
gateway, and a cut link during which the kernel survives and its WebSocket reconnects); the
companion's `start HOST --gateway-url URL` through a real sshd; the token on no command line.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid

import psutil
import pytest
from tornado.websocket import websocket_connect

from jupyter_colab_remote.agent import gateway_launch
from jupyter_colab_remote.companion.errors import CompanionError
from jupyter_colab_remote.companion.gateway import check_gateway_url, gateway_warning
from tests.harness.companion import (
    api,
    companion,
    companion_env,
    error_line,
    kill_runtimes,
    run_cli,
    run_code,
    start_companion,
    start_kernel,
)
from tests.harness.gateway import KernelGateway, TCPProxy, kernel_gateway
from tests.harness.kernel_client import execute
from tests.harness.processes import all_cmdlines, free_port
from tests.harness.runtime import run_runtime
from tests.harness.runtime_api import (
    local_kernels,
    rest,
    run_interrupted,
    run_on,
    status_doc,
    wait_for,
    ws_request,
)

pytest.importorskip("kernel_gateway")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(240),
]

COLAB_ORIGIN = "https://colab.research.google.com"
#: Reconnect quickly in tests (defaults: 1 s doubling up to 30 s, 5 attempts).
FAST_RETRY = [
    "--GatewayClient.gateway_retry_interval=0.2",
    "--GatewayClient.gateway_retry_interval_max=1.0",
]


# -- helpers ---------------------------------------------------------------------------------
def no_cmdline_has(secret: str) -> list[str]:
    return [f"{pid}: {cmd}" for pid, cmd in all_cmdlines().items() if secret in cmd]


def runtime_args(url: str, *extra: str) -> list[str]:
    return [f"--GatewayClient.url={url}", *extra]


@pytest.fixture
def gateway(tmp_path):
    with kernel_gateway(tmp_path / "gateway") as gw:
        yield gw


@pytest.fixture
def gw_runtime(tmp_path, gateway):
    """A runtime whose kernels run on `gateway`, its token in the environment only."""
    env = {gateway_launch.GATEWAY_TOKEN_ENV: gateway.token}
    with run_runtime(tmp_path / "rt", runtime_args(gateway.url, *FAST_RETRY), env=env) as rt:
        yield rt


# -- unit: launch arguments, URLs, warnings ------------------------------------------------------
def test_launch_arguments_carry_the_url_and_never_the_token():
    request = {
        "gateway_url": "https://eg.example.org:8888/gw",
        "gateway_token": "s3cret",
        "env": {
            "WANDB_API_KEY": "v",
            "HF_TOKEN": "w",
            "KERNEL_LAUNCH_TIMEOUT": "300",
            "JUPYTER_GATEWAY_REQUEST_TIMEOUT": "302",
        },
    }
    args = gateway_launch.serve_args(request)
    assert args == [
        "--GatewayClient.url=https://eg.example.org:8888/gw",
        "--GatewayClient.allowed_envs=HF_TOKEN,WANDB_API_KEY",
    ]
    assert not any("s3cret" in a or "=v" in a for a in args)
    assert gateway_launch.serve_env(request) == {"JUPYTER_GATEWAY_AUTH_TOKEN": "s3cret"}
    assert gateway_launch.serve_args({}) == [] and gateway_launch.serve_env({"x": 1}) == {}
    info = {"gateway_url": "https://eg.example.org:8888/gw"}
    assert gateway_launch.mismatch(info, request, "p") is None
    assert gateway_launch.mismatch(info, {}, "p") is None  # no gateway asked: re-attach
    other = gateway_launch.mismatch(info, {"gateway_url": "http://other:1"}, "p")
    assert "on the gateway https://eg.example.org:8888/gw" in other and "http://other:1" in other
    local = gateway_launch.mismatch({}, request, "p")
    assert "on this host" in local
    assert gateway_launch.public_url("https://u:p@h:1/x/?q=1") == "https://h:1/x"


def test_gateway_url_checks():
    assert check_gateway_url("http://eg.svc:8888/") == "http://eg.svc:8888"
    for bad in ("eg.svc:8888", "ftp://eg", "https://user:pw@eg.svc", "http://eg?token=x"):
        with pytest.raises(CompanionError) as e:
            check_gateway_url(bad)
        assert e.value.exit_code == 2
    assert gateway_warning({"gateway": None}) is None
    assert gateway_warning({"gateway": {"reachable": True}}) is None
    warn = gateway_warning({"gateway": {"reachable": False, "url": "http://g", "error": "refused"}})
    assert "http://g" in warn and "refused" in warn


# -- the runtime against a real gateway ----------------------------------------------------------
def test_kernels_run_interrupt_and_restart_on_the_gateway(gateway, gw_runtime):
    rt = gw_runtime
    code, _, specs = rest(rt, "GET", "/api/kernelspecs")
    assert code == 200 and specs["default"] in specs["kernelspecs"], specs

    code, _, model = rest(rt, "POST", "/api/kernels", {"name": "python3"})
    assert code == 201, model
    kernel_id = model["id"]
    # The gateway started it, as its own child; the runtime has no kernel processes.
    code, body = gateway.api("/api/kernels")
    assert code == 200 and kernel_id in {k["id"] for k in json.loads(body)}
    assert gateway.kernel_pids(), "no kernel process under the gateway"
    assert local_kernels(rt.proc.pid) == []

    assert asyncio.run(run_on(rt, kernel_id, "x = 41", "x + 1")) == ["", "42"]

    ename, seconds = asyncio.run(run_interrupted(rt, kernel_id))
    assert ename == "KeyboardInterrupt" and seconds < 10, (ename, seconds)
    assert asyncio.run(run_on(rt, kernel_id, "x"))[0] == "41"  # interrupted, not restarted

    code, _, body = rest(rt, "POST", f"/api/kernels/{kernel_id}/restart", {})
    assert code == 200, body
    out = asyncio.run(run_on(rt, kernel_id, "x", "'alive'"))
    assert out[0].startswith("NameError"), out
    assert out[1] == "'alive'"

    doc = status_doc(rt)
    gw = doc["gateway"]
    assert gw["url"] == gateway.url and gw["reachable"] is True and gw["error"] is None, gw
    (record,) = doc["kernels"]
    assert record["id"] == kernel_id and record["name"] == "python3"
    assert record["execution_state"] in ("idle", "busy", "starting")
    assert record["memory_bytes"] is None  # its process is the gateway's, not ours

    code, _, text = rest(rt, "GET", "/api/colab/resources")
    assert code == 200
    resources = json.loads(text.removeprefix(")]}'\n"))
    assert resources["memory"]["kernels"] == [] and resources["memory"]["totalBytes"] > 0

    code, _, _ = rest(rt, "DELETE", f"/api/kernels/{kernel_id}")
    assert code == 204
    code, body = gateway.api("/api/kernels")
    assert json.loads(body) == []
    assert status_doc(rt)["kernels"] == []

    # The gateway's token: on no command line, in no log line of the runtime.
    assert not no_cmdline_has(gateway.token)
    assert gateway.token not in rt.log()


def test_execute_round_trip_through_the_gateway_has_no_nagle_stall(gateway, gw_runtime):
    """The gateway's kernel WebSocket leaves Nagle on; the runtime acknowledges at once, so
    a round trip costs a few ms, not the 40 ms delayed-ACK wait per execute."""
    rt = gw_runtime
    _, _, model = rest(rt, "POST", "/api/kernels", {"name": "python3"})

    async def rtts() -> list[float]:
        ws = await websocket_connect(ws_request(rt, model["id"]))
        try:
            await execute(ws, "pass", 60)
            out = []
            for _ in range(30):
                t0 = time.perf_counter()
                await execute(ws, "pass", 30)
                out.append(time.perf_counter() - t0)
            return sorted(out)
        finally:
            ws.close()

    samples = asyncio.run(rtts())
    p50 = samples[len(samples) // 2] * 1000
    assert p50 < 30, f"p50 {p50:.1f} ms: the 40 ms delayed-ACK stall is back"


def test_gateway_down_gives_clear_errors_and_recovers(gateway, gw_runtime):
    rt = gw_runtime
    _, _, model = rest(rt, "POST", "/api/kernels", {"name": "python3"})
    old_kernel = model["id"]
    gateway.stop()

    doc = status_doc(rt)
    gw = doc["gateway"]
    assert gw["reachable"] is False and "connection refused" in gw["error"], gw
    assert [k["id"] for k in doc["kernels"]] == [old_kernel]
    assert doc["kernels"][0]["execution_state"] == "unknown"
    available = doc["kernels_available"]
    assert available["python"] is None and "gateway is unreachable" in available["advice"]

    for method, path in (
        ("GET", "/api/kernels"),
        ("POST", "/api/kernels"),
        ("GET", "/api/kernelspecs"),
        ("POST", f"/api/kernels/{old_kernel}/interrupt"),
    ):
        body = {"name": "python3"} if method == "POST" else None
        code, headers, err = rest(rt, method, path, body, origin=COLAB_ORIGIN)
        assert code == 503, (path, code, err)
        assert headers["Content-Type"].startswith("application/json")
        assert headers["Access-Control-Allow-Origin"] == COLAB_ORIGIN  # the page can read it
        assert err["reason"] == "Kernel gateway unreachable", err
        assert err["message"] == (
            f"Kernel gateway {gateway.url}: connection refused (is the gateway running?)"
        ), err
    log = rt.log()
    assert "Traceback" not in log and "Unhandled error" not in log, log[-3000:]

    gateway.start()
    wait_for(lambda: status_doc(rt)["gateway"]["reachable"], what="gateway reachable again")
    code, _, kernels = rest(rt, "GET", "/api/kernels")
    assert code == 200 and kernels == []  # the old kernel died with the gateway: dropped
    doc = status_doc(rt)
    assert doc["kernels"] == []
    assert doc["kernels_available"]["python"] is True, doc["kernels_available"]
    assert "python3" in doc["kernels_available"]["kernelspecs"]
    code, _, model = rest(rt, "POST", "/api/kernels", {"name": "python3"})
    assert code == 201, model
    assert asyncio.run(run_on(rt, model["id"], "6 * 7")) == ["42"]


def test_cut_link_to_gateway_kernel_survives_and_websocket_reconnects(tmp_path, gateway):
    """The runtime reaches the gateway through a link that is cut and restored: meanwhile
    status says why it is unreachable; afterwards the same kernel, with its variables, answers
    on the same client WebSocket (jupyter_server reconnects to the gateway)."""
    proxy = TCPProxy(gateway.port).start()
    env = {gateway_launch.GATEWAY_TOKEN_ENV: gateway.token}
    args = runtime_args(f"http://127.0.0.1:{proxy.port}", *FAST_RETRY)
    args.append("--GatewayClient.gateway_retry_max=100")
    try:
        with run_runtime(tmp_path / "rt", args, env=env) as rt:
            _, _, model = rest(rt, "POST", "/api/kernels", {"name": "python3"})
            kernel_id = model["id"]

            async def scenario() -> list[str]:
                ws = await websocket_connect(ws_request(rt, kernel_id))
                try:
                    assert await execute(ws, "y = 'kept'; y", 60) == "'kept'"
                    proxy.cut()
                    doc = await asyncio.to_thread(status_doc, rt)
                    assert doc["gateway"]["reachable"] is False, doc["gateway"]
                    assert "connection refused" in doc["gateway"]["error"]
                    await asyncio.sleep(1.0)
                    proxy.restore()
                    # Until the relay has reconnected, a request may be dropped: retry.
                    end = time.monotonic() + 30
                    while True:
                        try:
                            return [await execute(ws, "y", 2)]
                        except TimeoutError:
                            if time.monotonic() > end:
                                raise
                finally:
                    ws.close()

            assert asyncio.run(scenario()) == ["'kept'"]
            assert status_doc(rt)["gateway"]["reachable"] is True
            assert [k["id"] for k in status_doc(rt)["kernels"]] == [kernel_id]
    finally:
        proxy.close()


def test_client_websocket_closed_when_the_gateway_stays_away(tmp_path, gateway):
    """Once jupyter_server gives up reconnecting to the gateway, the client's WebSocket is
    closed (1011) so that Colab reconnects, instead of staying open and silent."""
    env = {gateway_launch.GATEWAY_TOKEN_ENV: gateway.token}
    args = runtime_args(gateway.url, *FAST_RETRY, "--GatewayClient.gateway_retry_max=2")
    with run_runtime(tmp_path / "rt", args, env=env) as rt:
        _, _, model = rest(rt, "POST", "/api/kernels", {"name": "python3"})

        async def scenario() -> tuple[int | None, str | None]:
            ws = await websocket_connect(ws_request(rt, model["id"]))
            assert await execute(ws, "1", 60) == "1"
            gateway.stop()
            end = time.monotonic() + 30
            while time.monotonic() < end:
                msg = await asyncio.wait_for(ws.read_message(), 30)
                if msg is None:
                    return ws.close_code, ws.close_reason
            return None, None

        code, reason = asyncio.run(scenario())
        assert code == 1011 and reason == "Kernel gateway unreachable", (code, reason)
        assert "unreachable after 2 attempts" in rt.log()


def test_wrong_gateway_token_is_reported(tmp_path, gateway):
    env = {gateway_launch.GATEWAY_TOKEN_ENV: "not-the-token"}
    with run_runtime(tmp_path / "rt", runtime_args(gateway.url), env=env) as rt:
        gw = status_doc(rt)["gateway"]
        assert gw["reachable"] is False and "HTTP 401" in gw["error"], gw
        assert "JUPYTER_GATEWAY_AUTH_TOKEN" in gw["error"]
        code, _, err = rest(rt, "POST", "/api/kernels", {"name": "python3"})
        assert code == 502 and "HTTP 401" in err["message"], err


# -- Colab's page ------------------------------------------------------------------------------
@pytest.mark.browser
def test_colab_page_uses_gateway_kernels_and_sees_the_outage(tmp_path, gateway, gw_runtime):
    from tests.harness.browser import browser_available, chromium, serve_page

    missing = browser_available()
    if missing:
        pytest.skip(f"no browser to test with: {missing}")
    rt = gw_runtime
    base, token = f"http://localhost:{rt.port}", rt.token
    with (
        serve_page("colab.research.google.com", tmp_path / "certs") as page,
        chromium([page]) as browser,
    ):
        browser.open(page.origin)
        browser.grant_loopback(page.origin)
        started = browser.request(
            f"{base}/api/kernels?token={token}",
            {
                "method": "POST",
                "headers": {"Content-Type": "application/json"},
                "body": json.dumps({"name": "python3"}),
            },
            ms=30000,
        )
        assert started.get("status") == 201, started
        kernel_id = json.loads(started["text"])["id"]
        ws_url = (
            f"ws://localhost:{rt.port}/api/kernels/{kernel_id}/channels"
            f"?session_id={uuid.uuid4().hex}&token={token}"
        )
        run = browser.execute(ws_url, "2**10", ms=30000)
        assert run.get("error") is None and run["reply"]["status"] == "ok", run
        assert run["executeResult"]["data"]["text/plain"] == "1024"
        listed = browser.request(f"{base}/api/kernels?token={token}")
        assert [k["id"] for k in json.loads(listed["text"])] == [kernel_id]

        gateway.stop()
        down = browser.request(f"{base}/api/kernels?token={token}", ms=20000)
        assert down.get("status") == 503, down  # readable by the page: CORS on errors too
        err = json.loads(down["text"])
        assert "connection refused" in err["message"] and gateway.url in err["message"]
        status = browser.request(f"{base}/colabremote/api/status?token={token}")
        assert json.loads(status["text"])["gateway"]["reachable"] is False

        gateway.start()
        wait_for(lambda: status_doc(rt)["gateway"]["reachable"], what="gateway back")
        again = browser.request(
            f"{base}/api/kernels?token={token}",
            {"method": "POST", "headers": {"Content-Type": "application/json"}, "body": "{}"},
            ms=30000,
        )
        assert again.get("status") == 201, again
        new_id = json.loads(again["text"])["id"]
        run = browser.execute(ws_url.replace(kernel_id, new_id), "1+1", ms=30000)
        assert run["executeResult"]["data"]["text/plain"] == "2", run


# -- the companion through a real sshd ---------------------------------------------------------
@pytest.mark.needs_root
def test_companion_start_with_gateway_url(tmp_path, sshd_server, ssh_client_files, gateway):
    home = ssh_client_files.make_home(tmp_path / "laptop")
    env = companion_env(home, tmp_path, COLABREMOTE_GATEWAY_TOKEN=gateway.token)
    remote_runtime = sshd_server.remote_env["JUPYTER_RUNTIME_DIR"]
    try:
        with companion(
            ["start", "gpu-box", "--gateway-url", gateway.url + "/", "--port", str(free_port())]
            + ["--json"],
            env,
            tmp_path / "logs",
        ) as c:
            record = start_companion(c)
            assert record["gateway_url"] == gateway.url
            url = record["url"]
            kernel_id = start_kernel(url)
            code, body = gateway.api("/api/kernels")
            assert kernel_id in {k["id"] for k in json.loads(body)}
            assert run_code(url, kernel_id, "import os; os.getpid()")[0].isdigit()
            code, body = api(url, "/colabremote/api/status")
            doc = json.loads(body)
            assert doc["gateway"]["reachable"] is True
            assert [k["id"] for k in doc["kernels"]] == [kernel_id]

            # The token went over stdin to the agent, then into the runtime's environment:
            # never onto a command line, into the runtime file, its log, or the companion's.
            assert not no_cmdline_has(gateway.token)
            runtime_pid = record["remote_pid"]
            assert psutil.Process(runtime_pid).environ()["JUPYTER_GATEWAY_AUTH_TOKEN"] == (
                gateway.token
            )
            cmdline = " ".join(psutil.Process(runtime_pid).cmdline())
            assert f"--GatewayClient.url={gateway.url}" in cmdline
            for path in [*tmp_path.rglob("*.json"), *tmp_path.rglob("*.log")]:
                if path.is_file() and "gateway" not in path.parts:
                    assert gateway.token not in path.read_text(errors="replace"), path
            assert gateway.token not in c.stderr()

            # Re-attaching that runtime for another gateway is refused, in one line.
            other = ["--gateway-url", "http://127.0.0.1:9", "--port", str(free_port())]
            res = run_cli("start", "gpu-box", *other, env=env)
            assert res.returncode != 0
            line = error_line(res)
            assert f"runs its kernels on the gateway {gateway.url}" in line, line
    finally:
        kill_runtimes(remote_runtime)
    assert os.environ.get("COLABREMOTE_GATEWAY_TOKEN") != gateway.token


@pytest.mark.needs_root
def test_companion_warns_when_the_host_cannot_reach_the_gateway(
    tmp_path, sshd_server, ssh_client_files
):
    dead = KernelGateway(tmp_path / "nogw")  # never started: its port refuses
    home = ssh_client_files.make_home(tmp_path / "laptop")
    env = companion_env(home, tmp_path)
    remote_runtime = sshd_server.remote_env["JUPYTER_RUNTIME_DIR"]
    try:
        with companion(
            ["start", "gpu-box", "--gateway-url", dead.url, "--port", str(free_port()), "--json"],
            env,
            tmp_path / "logs",
        ) as c:
            record = start_companion(c)
            assert record["gateway_url"] == dead.url
            err = c.stderr()
            assert f"cannot reach the kernel gateway {dead.url}: connection refused" in err, err
            code, body = api(record["url"], "/api/kernels", "POST", {"name": "python3"})
            assert code == 503 and b"connection refused" in body
    finally:
        kill_runtimes(remote_runtime)
