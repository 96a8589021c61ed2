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


@pytest.fixture
def authenticated_http_origin(origin, tmp_path):
    """The origin repository served over http://127.0.0.1 (git's dumb HTTP protocol) behind
    Basic authentication with a token: (URL, token). A real HTTP server in a thread."""
    import base64
    import functools
    import http.server
    import threading

    bare = tmp_path / "served" / "repo.git"
    git("clone", "--quiet", "--bare", str(origin), str(bare))
    git("update-server-info", cwd=bare)
    token = "ghp_" + "t" * 36
    expected = "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    handler = functools.partial(Handler, directory=str(bare.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/repo.git", token
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_credential_helper_never_stores_the_token(
    authenticated_http_origin, tmp_path, monkeypatch
):
    """The server's git is configured with `credential.helper=store` (common): the clone with
    a token succeeds, and no credential file holds the token afterwards (issue 10, item 4)."""
    url, token = authenticated_http_origin
    home = tmp_path / "server-home"
    home.mkdir()
    (home / ".gitconfig").write_text("[credential]\n\thelper = store\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    work = tmp_path / "work"
    assert sync_repository(str(work), url, token)["git"] == "cloned"
    assert (work / "train.py").exists()
    assert sync_repository(str(work), url, token)["git"] == "updated"
    for f in [*home.rglob("*"), *(work / ".git").rglob("*")]:
        if f.is_file():
            assert token.encode() not in f.read_bytes(), f
    # Without the token the server refuses: the clone above really authenticated.
    with pytest.raises(WorkspaceError):
        sync_repository(str(tmp_path / "other"), url, None)


@pytest.mark.parametrize(
    "spec",
    [
        "https://ghp_secret@github.com/me/repo.git",
        "https://me:ghp_secret@github.com/me/repo.git",
        "http://user:pw@example.org/r.git#main",
    ],
)
def test_urls_with_credentials_are_refused(spec):
    with pytest.raises(WorkspaceError, match="carries credentials") as e:
        split_git_spec(spec)
    assert "ghp_secret" not in str(e.value) and "pw@" not in str(e.value)


@pytest.mark.parametrize(
    "spec", ["https://h/r.git#--upload-pack=touch /tmp/x", "-u/r.git", "https://h/r.git#a b"]
)
def test_option_like_branches_and_urls_are_refused(spec):
    with pytest.raises(WorkspaceError, match="misread"):
        split_git_spec(spec)


def test_ssh_style_urls_keep_their_user():
    """`git@host:path` and ssh:// URLs name an SSH user, not a secret: accepted."""
    assert split_git_spec("git@github.com:me/r.git#dev") == ("git@github.com:me/r.git", "dev")
    assert split_git_spec("ssh://git@github.com/me/r.git")[0] == "ssh://git@github.com/me/r.git"
