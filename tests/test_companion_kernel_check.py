"""A runtime that cannot run Python is reported by `start` and `doctor`, with the fix (issue 9).

Real sshd and runtime. The remote environment lacks ipykernel in the way that matters to
jupyter_client: the remote sessions' PYTHONPATH starts with a directory holding an `ipykernel`
package that fails to import, so no Python kernelspec exists (as in an environment where
ipykernel was never installed; removing it from the shared test environment is not possible
while other tests use it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from companion_helpers import api, companion_env, error_line, kill_runtimes, run_cli, token_of
from sshd import SYSTEM_PATH, free_port, run_sshd


@pytest.fixture
def no_ipykernel(tmp_path) -> Path:
    """A directory whose `ipykernel` package cannot be imported."""
    shadow = tmp_path / "no-ipykernel"
    (shadow / "ipykernel").mkdir(parents=True)
    (shadow / "ipykernel" / "__init__.py").write_text(
        'raise ImportError("ipykernel is not installed (simulated)")\n'
    )
    return shadow


def test_start_and_doctor_report_a_runtime_without_python(tmp_path, ssh_client_files, no_ipykernel):
    """start exits 7 naming the environment and what to install; doctor exits 7 at the
    'Python kernel' check (after token and origin passed); POST /api/kernels answers JSON."""
    set_env = {"PATH": SYSTEM_PATH, "PYTHONPATH": str(no_ipykernel)}
    with run_sshd(tmp_path, name="sshd", set_env=set_env) as server:
        ssh_client_files.add_host("gpu-box", server)
        env = companion_env(ssh_client_files.make_home(tmp_path / "home"), tmp_path)
        try:
            port = free_port()
            args = ["start", "gpu-box", "--port", str(port), "--remote-python", sys.executable]
            res = run_cli(*args, env=env, timeout=120)
            assert res.returncode == 7, res.stderr
            msg = error_line(res)
            assert "on gpu-box" in msg and "Python kernel" in msg and "ipykernel" in msg, msg

            res = run_cli("doctor", "gpu-box", env=env, timeout=120)
            assert res.returncode == 7, res.stdout + res.stderr
            assert "[ok  ] token and Colab origin" in res.stdout, res.stdout
            assert "[FAIL] Python kernel" in res.stdout and "ipykernel" in res.stdout
            assert "Traceback" not in res.stderr

            # The runtime itself answers Colab's kernel request with the same advice.
            record = json.loads(
                next(
                    Path(env["JUPYTER_DATA_DIR"]).glob("colabremote/connections/*.json")
                ).read_text()
            )
            remote_rt = next(
                Path(server.remote_env["JUPYTER_RUNTIME_DIR"]).glob("colabremote-[0-9]*.json")
            )
            url = f"http://127.0.0.1:{json.loads(remote_rt.read_text())['port']}/?token={record['token']}"
            code, body = api(url, "/api/kernels", "POST", {"name": "python3"})
            assert code != 201 and code < 600
            message = json.loads(body)["message"]
            assert "ipykernel" in message and "Unhandled error" not in message, message
            assert token_of(url) not in message
        finally:
            kill_runtimes(server.remote_env["JUPYTER_RUNTIME_DIR"])
