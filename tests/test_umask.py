"""A permissive umask never makes what the runtime creates writable by others (issue 10,
item 9). Real sshd and runtime; the server's login umask of 000 is simulated by a
--remote-python wrapper (`umask 000; exec python "$@"`), as a misconfigured /etc/profile or
PAM setting gives it. The remote Jupyter data directory is left at its default
(~/.local/share/jupyter), so the runtime creates it."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from tests.harness.companion import (
    api,
    companion,
    companion_env,
    kill_runtimes,
    run_cli,
    start_companion,
)
from tests.harness.processes import free_port
from tests.harness.sshd import run_sshd

pytestmark = [pytest.mark.e2e, pytest.mark.needs_root]


def open_to_others(root: Path) -> list[str]:
    """Paths under root that group or others may write."""
    out = []
    for p in [root, *root.rglob("*")]:
        mode = p.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & (stat.S_IWGRP | stat.S_IWOTH):
            out.append(f"{p} {stat.filemode(mode)}")
    return out


def test_what_the_runtime_creates_stays_private_under_umask_000(tmp_path, ssh_client_files):
    with run_sshd(tmp_path, name="sshd", set_env={"JUPYTER_DATA_DIR": None}) as server:
        ssh_client_files.add_host("gpu-box", server)
        env = companion_env(ssh_client_files.make_home(tmp_path / "home"), tmp_path)
        wrapper = tmp_path / "python-umask-000"
        wrapper.write_text(f'#!/bin/sh\numask 000\nexec {sys.executable} "$@"\n')
        wrapper.chmod(0o755)
        home = Path(server.remote_env["HOME"])
        args = ["start", "gpu-box", "--json", "--port", str(free_port())]
        args += ["--remote-python", str(wrapper), "--workdir", "~/proj"]
        try:
            with companion(args, env, tmp_path / "logs") as c:
                rec = start_companion(c)
                # What Colab and the user create through the runtime: a folder, a notebook.
                code, _ = api(rec["url"], "/api/contents/data", "PUT", {"type": "directory"})
                assert code == 201
                nb = {"type": "notebook", "content": {"cells": [], "metadata": {},
                      "nbformat": 4, "nbformat_minor": 5}}  # fmt: skip
                code, _ = api(rec["url"], "/api/contents/data/a.ipynb", "PUT", nb)
                assert code == 201
                assert json.loads(api(rec["url"], "/api/contents/data")[1])["content"]
                assert (home / "proj/data/a.ipynb").is_file()
                assert (home / ".local/share/jupyter").is_dir()
                assert open_to_others(home) == []
                # The user's notebook is theirs alone (umask 077 in the runtime).
                assert (home / "proj/data/a.ipynb").stat().st_mode & 0o077 == 0
                assert open_to_others(Path(server.remote_env["JUPYTER_RUNTIME_DIR"])) == []
        finally:
            run_cli("stop", "gpu-box", env=env)
            kill_runtimes(server.remote_env["JUPYTER_RUNTIME_DIR"])
