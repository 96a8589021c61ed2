"""Named profiles: `start NAME` recalls host, port and environment from Jupyter config."""

from __future__ import annotations

import json

import pytest

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
from tests.harness.processes import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.needs_root]


def write_config(env: dict, text: str) -> None:
    """Put jupyter_colabremote_config.py into the user's Jupyter config directory."""
    from pathlib import Path

    cfg = Path(env["JUPYTER_CONFIG_DIR"])
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "jupyter_colabremote_config.py").write_text(text)


def test_profile_recalls_host_port_and_environment(tmp_path, sshd_server, ssh_client_files):
    """`start thesis` uses the profile's host, port and env file; the runtime is named after it."""
    home = ssh_client_files.make_home(tmp_path / "home")
    env = companion_env(home, tmp_path)
    port = free_port()
    env_file = tmp_path / "thesis.env"
    env_file.write_text("DATASET=imagenet-mini\n")
    write_config(
        env,
        "c.ColabRemoteCompanion.profiles = {'thesis': {"
        f"'host': 'gpu-box', 'port': {port}, 'env_file': {str(env_file)!r}}}}}\n",
    )
    try:
        with companion(["start", "thesis", "--json"], env, tmp_path / "logs") as c:
            record = start_companion(c)
            assert record["local_port"] == port
            assert record["profile"] == "thesis"
            url = record["url"]
            kid = start_kernel(url)
            assert run_code(url, kid, "import os; os.environ['DATASET']") == ["'imagenet-mini'"]
            res = run_cli("status", "thesis", "--json", env=env)
            assert res.returncode == 0, res.stderr
            (runtime,) = json.loads(res.stdout)["runtimes"]
            assert runtime["profile"] == "thesis"
            assert api(url, "/api/colab/build-info")[0] == 200
            assert c.stop() == 0
        res = run_cli("stop", "thesis", env=env)
        assert res.returncode == 0 and "stopped the runtime on gpu-box" in res.stdout
    finally:
        kill_runtimes(env["JUPYTER_RUNTIME_DIR"])


def test_profile_with_unknown_keys_is_a_clear_error(tmp_path):
    """A typo in the config is named, with the keys that are allowed."""
    env = companion_env(tmp_path / "home", tmp_path)
    write_config(env, "c.ColabRemoteCompanion.profiles = {'box': {'host': 'h', 'prot': 1}}\n")
    res = run_cli("start", "box", env=env)
    assert res.returncode == 1
    assert "profile 'box' has unknown keys ['prot']" in error_line(res)
    assert "Traceback" not in res.stderr
