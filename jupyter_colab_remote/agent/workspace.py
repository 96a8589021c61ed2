"""The runtime's workspace on the remote host: clone or update a git repository for it.

A git token arrives in the agent's stdin JSON and reaches git only through the
environment of the git process (an askpass script that prints environment variables):
never on a command line, never written to disk. Credential helpers are switched off for
these git runs, so a server's `credential.helper=store` cannot save the token either; URLs
carrying credentials (they would land in .git/config) and branch names git would read as
options are refused.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

GIT_TIMEOUT = 600.0
ASKPASS_SCRIPT = """#!/bin/sh
case "$1" in
  Username*) printf '%s\\n' "${COLABREMOTE_GIT_USER:-x-access-token}" ;;
  *) printf '%s\\n' "$COLABREMOTE_GIT_TOKEN" ;;
esac
"""


#: Before every git subcommand: no credential helper (an empty value clears the list).
GIT_OPTIONS = ["-c", "credential.helper="]


class WorkspaceError(Exception):
    """Cloning or updating the workspace failed."""


def split_git_spec(spec: str) -> tuple[str, str | None]:
    """`URL[#branch]` -> (url, branch or None), refusing what git must not be given."""
    url, _, branch = spec.partition("#")
    if not url:
        raise WorkspaceError(f"invalid git spec {spec!r}: expected URL[#branch]")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() in ("http", "https") and "@" in parts.netloc:
        raise WorkspaceError(
            "the --git URL carries credentials, which git would save in .git/config on the "
            "server; give the URL without them and the token in GIT_TOKEN (or ./.env)"
        )
    if url.startswith("-") or (branch and not valid_branch(branch)):
        raise WorkspaceError(f"invalid git spec {spec!r}: a URL or branch name git would misread")
    return url, branch or None


def valid_branch(branch: str) -> bool:
    """A branch name git cannot take for an option (and with no space or control character)."""
    return not branch.startswith("-") and all(c.isprintable() and not c.isspace() for c in branch)


@contextlib.contextmanager
def git_env(token: str | None) -> Iterator[dict[str, str]]:
    """An environment for git that answers credential prompts from the token, if any."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    if not token:
        yield env
        return
    fd, path = tempfile.mkstemp(prefix="colabremote-askpass-", suffix=".sh")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(ASKPASS_SCRIPT)  # the script holds no secret: it reads the environment
        os.chmod(path, stat.S_IRWXU)
        env.update({"GIT_ASKPASS": path, "COLABREMOTE_GIT_TOKEN": token})
        yield env
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _git(args: list[str], cwd: str | None, env: dict[str, str], token: str | None) -> str:
    try:
        proc = subprocess.run(
            ["git", *GIT_OPTIONS, *args], cwd=cwd, env=env, capture_output=True, text=True,
            timeout=GIT_TIMEOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except FileNotFoundError as e:
        raise WorkspaceError("git is not installed on the remote host") from e
    except subprocess.TimeoutExpired as e:
        raise WorkspaceError(f"git {args[0]} timed out after {GIT_TIMEOUT:.0f} s") from e
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        if token:
            detail = detail.replace(token, "[secret]")
        raise WorkspaceError(f"git {args[0]} failed: {detail}")
    return proc.stdout


def sync_repository(workdir: str, spec: str, token: str | None = None) -> dict[str, str]:
    """Clone `spec` into `workdir`, or fetch and fast-forward it if it is already there."""
    url, branch = split_git_spec(spec)
    path = Path(workdir)
    with git_env(token) as env:
        if (path / ".git").exists():
            _git(["fetch", "--quiet", "origin"], str(path), env, token)
            if branch:
                _git(["checkout", "--quiet", branch], str(path), env, token)
            # Fast-forward only: never overwrite the user's local commits or changes.
            _git(["merge", "--ff-only", "--quiet", "@{u}"], str(path), env, token)
            action = "updated"
        else:
            if path.exists() and any(path.iterdir()):
                raise WorkspaceError(f"{workdir} exists and is not a git checkout")
            args = ["clone", "--quiet"]
            if branch:
                args += ["--branch", branch]
            _git([*args, "--", url, str(path)], None, env, token)
            action = "cloned"
        head = _git(["rev-parse", "--short", "HEAD"], str(path), env, token).strip()
    return {"git": action, "head": head}
