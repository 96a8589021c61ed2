"""The runtime's workspace: a git repository cloned, then updated on re-attach."""

from __future__ import annotations

import subprocess

import pytest

from jupyter_colab_remote.agent.workspace import (
    WorkspaceError,
    git_env,
    split_git_spec,
    sync_repository,
)


def git(*args: str, cwd=None) -> str:
    """Run git for the test's own set-up."""
    return subprocess.run(
        ["git", "-c", "user.email=t@e.st", "-c", "user.name=t", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip


@pytest.fixture
def origin(tmp_path):
    """A repository with a `main` and a `feature` branch, as the remote to clone from."""
    repo = tmp_path / "origin"
    repo.mkdir()
    git("init", "--quiet", "-b", "main", cwd=repo)
    (repo / "train.py").write_text("print('v1')\n")
    git("add", ".", cwd=repo)
    git("commit", "--quiet", "-m", "v1", cwd=repo)
    git("branch", "feature", cwd=repo)
    return repo


def test_clone_then_update_on_reattach(origin, tmp_path):
    """First start clones; a later start pulls new commits without touching local files."""
    work = tmp_path / "work"
    assert sync_repository(str(work), f"file://{origin}")["git"] == "cloned"
    assert (work / "train.py").read_text() == "print('v1')\n"
    (origin / "train.py").write_text("print('v2')\n")
    git("commit", "--quiet", "-am", "v2", cwd=origin)
    (work / "notes.txt").write_text("my scratch notes\n")  # untracked work survives
    result = sync_repository(str(work), f"file://{origin}")
    assert result["git"] == "updated"
    assert (work / "train.py").read_text() == "print('v2')\n"
    assert (work / "notes.txt").exists()


def test_branch_selection(origin, tmp_path):
    """`URL#branch` checks out that branch."""
    work = tmp_path / "work"
    sync_repository(str(work), f"file://{origin}#feature")
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=work).strip() == "feature"


def test_local_commits_are_never_overwritten(origin, tmp_path):
    """Diverged history is an error, not a reset: nothing the user wrote is lost."""
    work = tmp_path / "work"
    sync_repository(str(work), f"file://{origin}")
    (work / "train.py").write_text("print('mine')\n")
    git("commit", "--quiet", "-am", "mine", cwd=work)
    (origin / "train.py").write_text("print('theirs')\n")
    git("commit", "--quiet", "-am", "theirs", cwd=origin)
    with pytest.raises(WorkspaceError, match="git merge failed"):
        sync_repository(str(work), f"file://{origin}")
    assert (work / "train.py").read_text() == "print('mine')\n"


def test_non_git_directory_is_refused(tmp_path):
    """An existing directory with files is not clobbered by a clone."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "data.csv").write_text("1,2\n")
    with pytest.raises(WorkspaceError, match="not a git checkout"):
        sync_repository(str(work), "file:///nonexistent")


def test_token_reaches_git_only_through_its_environment(tmp_path):
    """git asks our askpass for credentials; the token is in no file and no argument."""
    token = "ghp_" + "x" * 36
    with git_env(token) as env:
        script = open(env["GIT_ASKPASS"]).read()
        assert token not in script
        out = subprocess.run(
            ["git", "credential", "fill"],
            input="protocol=https\nhost=git.example.org\n\n",
            env=env, capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
    assert f"password={token}" in out
    assert "username=x-access-token" in out


def test_spec_parsing():
    """`URL#branch` splits at the last part; an empty URL is an error."""
    assert split_git_spec("https://h/r.git#dev") == ("https://h/r.git", "dev")
    assert split_git_spec("https://h/r.git") == ("https://h/r.git", None)
    with pytest.raises(WorkspaceError):
        split_git_spec("#dev")
