"""`start --git`: the runtime's root is a clone of the user's repository, updated on re-attach."""

from __future__ import annotations

import subprocess

import pytest

from tests.harness.companion import (
    api,
    companion,
    companion_env,
    kill_runtimes,
    run_cli,
    run_code,
    start_companion,
    start_kernel,
)
from tests.harness.processes import all_cmdlines, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.needs_root]


def git(*args: str, cwd=None) -> None:
    """git for the test's own set-up."""
    subprocess.run(
        ["git", "-c", "user.email=t@e.st", "-c", "user.name=t", *args],
        cwd=cwd, check=True, capture_output=True,
    )  # fmt: skip


def test_git_workspace_cloned_then_updated(tmp_path, sshd_server, ssh_client_files):
    """First start clones into the workdir (the runtime's root); the next start pulls."""
    origin = tmp_path / "origin"
    origin.mkdir()
    git("init", "--quiet", "-b", "main", cwd=origin)
    (origin / "train.py").write_text("EPOCHS = 1\n")
    git("add", ".", cwd=origin)
    git("commit", "--quiet", "-m", "v1", cwd=origin)

    home = ssh_client_files.make_home(tmp_path / "home")
    secret = "ghp_" + "s3cr3t" * 6
    env = companion_env(home, tmp_path, GITHUB_TOKEN=secret)
    workdir = str(tmp_path / "remote-work")
    port = str(free_port())
    args = ["start", "gpu-box", "--json", "--port", port, "--git", f"file://{origin}#main"]
    try:
        with companion([*args, "--workdir", workdir], env, tmp_path / "logs1") as c:
            record = start_companion(c)
            assert record["workspace"]["git"] == "cloned"
            url = record["url"]
            kid = start_kernel(url)
            out = run_code(url, kid, "import os; print(os.getcwd()); open('train.py').read()")
            assert out == [f"{workdir}\n'EPOCHS = 1\\n'"]
            # The companion told the runtime which local port Colab uses (the panel shows it).
            code, body = api(url, "/colabremote/api/status")
            assert code == 200 and f'"colab_port": {record["local_port"]}' in body.decode()
            # The git token travels over SSH only: never on a command line.
            assert not any(secret in line for line in all_cmdlines().values())
            assert c.stop() == 0

        (origin / "train.py").write_text("EPOCHS = 2\n")
        git("commit", "--quiet", "-am", "v2", cwd=origin)
        with companion([*args, "--workdir", workdir], env, tmp_path / "logs2") as c:
            record = start_companion(c)
            assert record["reattached"] is True
            assert record["workspace"]["git"] == "updated"
            assert run_code(record["url"], kid, "open('train.py').read()") == ["'EPOCHS = 2\\n'"]
            assert secret not in c.stderr()
            assert c.stop() == 0
        assert run_cli("stop", "gpu-box", env=env).returncode == 0
    finally:
        kill_runtimes(env["JUPYTER_RUNTIME_DIR"])
