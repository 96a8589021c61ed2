"""Command lines for the server's shell: quoted words, but home-relative paths expand there."""

from __future__ import annotations

import os
import subprocess

import pytest

from jupyter_colab_remote.companion.remote import remote_path, sh_join, sh_path


@pytest.mark.parametrize(
    "word, quoted",
    [
        ("~", '"$HOME"'),
        ("~/venvs/ml", '"$HOME"/venvs/ml'),
        ("$HOME/a b", "\"$HOME\"/'a b'"),
        ("${HOME}/x", '"$HOME"/x'),
        ("~/", '"$HOME"/'),
        ("~alice/data", "~alice/data"),
        ("/opt/x;rm -rf /", "'/opt/x;rm -rf /'"),
        ("not~home", "'not~home'"),
        ("$(reboot)", "'$(reboot)'"),
    ],
)
def test_sh_path(word, quoted):
    """Only a leading ~, ~user, $HOME or ${HOME} stays unquoted; the rest is one literal word."""
    assert sh_path(word) == quoted


def test_sh_join_runs_as_intended_in_a_real_shell(tmp_path):
    """/bin/sh gets the words back, with `~` expanded to HOME and nothing else interpreted."""
    argv = ["printf", "%s\\n", "~/a b", "$HOME", "it's", "$(id)", "*", "~/"]
    out = subprocess.run(
        ["/bin/sh", "-c", sh_join(argv)],
        env={**os.environ, "HOME": str(tmp_path)}, cwd=tmp_path,
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout  # fmt: skip
    assert out.splitlines() == [
        f"{tmp_path}/a b",
        str(tmp_path),
        "it's",
        "$(id)",
        "*",
        f"{tmp_path}/",
    ]


def test_remote_path_resolves_home_for_sftp():
    """SFTP has no shell: a leading ~/$HOME is resolved against the given home."""
    assert remote_path("~/venv", "/home/me/") == "/home/me/venv"
    assert remote_path("$HOME", "/home/me") == "/home/me"
    assert remote_path("/abs/~/x", "/home/me") == "/abs/~/x"
    assert remote_path("~other/x", "/home/me") == "~other/x"
