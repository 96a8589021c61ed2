"""A stale runtime file is never trusted (issue 10, item 1).

Real sshd, runtime and companion. The runtime crashes (SIGKILL: its runtime file stays); its
pid is then "reused" by an unrelated process (the file is pointed at a `sleep` of ours) and
its port taken by another account's server (`nobody`, through setpriv), which records every
request it gets. `start` must not re-attach to it or send it any token, must start a new
runtime with a fresh token (the old one may have been sent there by an older companion), and
`stop` must not signal the unrelated process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import textwrap
from pathlib import Path

import psutil
import pytest

from tests.harness.companion import (
    api,
    companion,
    companion_env,
    kill_runtimes,
    run_cli,
    start_companion,
    token_of,
)
from tests.harness.processes import free_port
from tests.harness.runtime_api import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.needs_root]

IMPOSTOR = textwrap.dedent(
    """
    import http.server, json, sys
    log = sys.stdout  # a file the test opened: this account cannot reach the test's tmp
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            log.write(json.dumps({"path": self.path, "headers": dict(self.headers)}) + "\\n")
            log.flush()
            body = b'{"version": "0.1.0"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        do_OPTIONS = do_PUT = do_POST = do_GET
        def log_message(self, *a):
            pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
    """
)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _answers(port: int) -> bool:
    try:
        return api(f"http://127.0.0.1:{port}/?token=x", "/")[0] == 200
    except OSError:
        return False


@pytest.fixture
def other_account():
    """Run a program as `nobody` (another account), or skip."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to act as another account")
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]


def test_a_stale_runtime_file_is_never_trusted(
    tmp_path, sshd_server, ssh_client_files, other_account
):
    env = companion_env(ssh_client_files.make_home(tmp_path / "home"), tmp_path)
    rdir = Path(sshd_server.remote_env["JUPYTER_RUNTIME_DIR"])
    port = free_port()
    procs: list[subprocess.Popen] = []
    try:
        with companion(
            ["start", "gpu-box", "--json", "--port", str(port)], env, tmp_path / "l"
        ) as c:
            old = start_companion(c)
            assert c.stop(signal.SIGINT) == 0
        [path] = rdir.glob("colabremote-[0-9]*.json")
        info = json.loads(path.read_text())
        psutil.Process(info["pid"]).kill()  # the runtime crashes; its file stays
        wait_for(lambda: not _running(info["pid"]), 10, "the crash")

        # Its pid now belongs to an unrelated process, its port to another account's server.
        bystander = subprocess.Popen(["sleep", "300"])
        procs.append(bystander)
        stale = {**info, "pid": bystander.pid}
        (rdir / f"colabremote-{bystander.pid}.json").write_text(json.dumps(stale))
        path.unlink()
        log = tmp_path / "impostor-requests.jsonl"
        with open(log, "w") as out:
            impostor = subprocess.Popen(
                [*other_account, "/usr/bin/python3", "-c", IMPOSTOR, str(info["port"])],
                cwd="/",
                stdout=out,
            )
        procs.append(impostor)
        wait_for(lambda: _answers(info["port"]), 20, "the impostor to listen")
        probes = log.read_text().count("\n")

        with companion(["start", "gpu-box", "--json"], env, tmp_path / "l") as c:
            new = start_companion(c)
            assert new["reattached"] is False and new["remote_pid"] != bystander.pid
            assert new["remote_port"] != info["port"]
            # The token an older companion may have sent there is retired; a fresh one works.
            assert token_of(new) != token_of(old)
            assert api(new["url"], "/api/kernelspecs")[0] == 200
            assert api(f"http://localhost:{new['local_port']}/?token={token_of(old)}",
                       "/api/kernelspecs")[0] == 403  # fmt: skip
            res = run_cli("stop", "gpu-box", env=env)
            assert res.returncode == 0 and str(new["remote_pid"]) in res.stdout, res.stdout
        sent = "".join(log.read_text().splitlines(keepends=True)[probes:])
        for token in (token_of(old), token_of(new)):
            assert token not in sent
        assert bystander.poll() is None, "stop signalled an unrelated process"
        assert not (rdir / f"colabremote-{bystander.pid}.json").exists()
    finally:
        for p in procs:
            p.kill()
            p.wait(5)
        kill_runtimes(rdir)
