"""The agent's actions: `info`, `ensure` (re-attach to the profile's runtime or start it
detached), `stop` and `status` (their records: protocol/messages.py)."""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import time
import typing as t
from collections.abc import Iterator
from pathlib import Path

import psutil
from jupyter_core.paths import jupyter_runtime_dir

from .. import __version__
from ..files import locked
from ..protocol.errors import ColabRemoteError
from ..protocol.messages import (
    EnsureAnswer,
    EnsureRequest,
    InfoAnswer,
    Request,
    StatusAnswer,
    StopAnswer,
    StopRequest,
)
from ..protocol.runtime_file import port_taken, running_servers, scan
from ..tokens import TokenStore, default_token_file, hash_token
from . import container, gateway_launch
from .server_paths import server_path
from .workspace import WorkspaceError, split_git_spec, sync_repository

#: How long a new runtime may take to start listening (kernelspecs, extensions, JupyterLab).
START_DEADLINE = 60.0
STOP_DEADLINE = 20.0
LOG_TAIL_LINES = 15


class AgentError(ColabRemoteError):
    """A failure to report to the companion in one line."""


def runtime_for(profile: str) -> dict[str, t.Any] | None:
    """The live runtime of this profile, if any."""
    for info in running_servers():
        if info.get("profile", "default") == profile:
            return info
    return None


@contextlib.contextmanager
def profile_lock(profile: str) -> Iterator[None]:
    """Serialize ensure/stop for one profile (two companions starting at once)."""
    with locked(Path(jupyter_runtime_dir()) / f"colabremote-{profile}.lock"):
        yield


def log_path(profile: str) -> Path:
    """Where the detached runtime of a profile writes its log (which never holds a token)."""
    return Path(jupyter_runtime_dir()) / f"colabremote-{profile}.log"


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def register_token(token_file: str | os.PathLike[str], request: EnsureRequest) -> EnsureAnswer:
    """Make the companion's token work without ever undoing a rotation or revocation.

    The companion sends its saved secret, whether this host accepted it before
    (`token_known`), and a fresh `fallback_token`. A saved secret that is still current is
    kept; a first-time one is registered. One that was rotated, revoked or expired here (in
    the panel, the CLI or the REST API) is never revived: the fallback is registered instead
    (under the same name if that name is free or expired, else under a new name, so the
    rotated token's new secret keeps working). Answers the name and whether it reissued.
    """
    token, name = request.get("token"), request.get("token_name")
    if not token or not name:
        return {}
    store = TokenStore(token_file)
    record = store.get(name)
    if request.get("token_compromised") and record is not None:
        if hmac.compare_digest(record.hash, hash_token(token)):
            store.revoke(name)
            record = None
    elif record is not None and not record.expired():
        if hmac.compare_digest(record.hash, hash_token(token)):
            return {"token_name": name, "token_reissued": False}
    elif record is None and not request.get("token_known"):
        store.create(name, secret=token)
        return {"token_name": name, "token_reissued": False}
    fresh = request.get("fallback_token")
    if not fresh:
        raise AgentError("this connection's token was rotated or revoked here; run start again")
    if record is not None and record.expired():
        store.revoke(name)
        record = None
    if record is not None:  # rotated elsewhere: its new secret stays with its user
        taken = {r.name for r in store.records()}
        name = next(f"{name}-{n}" for n in range(2, 10_000) if f"{name}-{n}" not in taken)
    store.create(name, secret=fresh)
    return {"token_name": name, "token_reissued": True}


def start_runtime(profile: str, request: EnsureRequest) -> EnsureAnswer:
    """Start `serve` detached (its own session, so it outlives the SSH connection)."""
    token_file = request.get("token_file") or str(default_token_file())
    claim = register_token(token_file, request)
    workdir = request.get("workdir")
    if workdir:
        workdir = server_path(workdir)
        os.makedirs(workdir, mode=0o700, exist_ok=True)
    args = [
        sys.executable, "-m", "jupyter_colab_remote", "serve",
        f"--port={int(request.get('port') or 0)}", "--ip=127.0.0.1",
        f"--ColabRemoteApp.profile={profile}",
        f"--ColabRemoteApp.token_file={token_file}",
    ]  # fmt: skip
    if workdir:
        args.append(f"--ServerApp.root_dir={workdir}")
    args += gateway_launch.serve_args(request)  # kernels on a gateway: its URL, never its token
    # Variables for the kernels (e.g. from --env-file) go through the environment,
    # never onto the command line or into a file.
    env = {**os.environ, **{str(k): str(v) for k, v in request.get("env", {}).items()}}
    env.update(gateway_launch.serve_env(request))
    log = log_path(profile)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir or os.path.expanduser("~"),
            start_new_session=True,
        )
    finally:
        os.close(fd)
    deadline = time.monotonic() + START_DEADLINE
    path = Path(jupyter_runtime_dir()) / f"colabremote-{proc.pid}.json"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AgentError(
                f"the runtime exited with code {proc.returncode} while starting; "
                f"last lines of {log}:\n{log_tail(log)}"
            )
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(path.read_text())
            return {**info, **claim, "reattached": False, "log": str(log)}
        time.sleep(0.05)
    proc.kill()
    raise AgentError(f"the runtime did not start within {START_DEADLINE:.0f} s (see {log})")


def valid_profile(profile: t.Any) -> str:
    """A profile name: it names files (lock, log), so letters, digits, `-`, `_`, `.` only."""
    if not isinstance(profile, str) or not re.fullmatch(
        r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", profile
    ):
        raise AgentError(f"invalid profile name {profile!r}: use letters, digits, '-', '_', '.'")
    return profile


def ensure(request: EnsureRequest) -> EnsureAnswer:
    """Re-attach to the profile's runtime (same token store, same kernels) or start it."""
    profile = valid_profile(request.get("profile", "default"))
    with profile_lock(profile):
        workspace = sync_workspace(request)
        live, stale = scan()
        info = next((i for i in live if i.get("profile", "default") == profile), None)
        if any(
            r.get("profile", "default") == profile and port_taken(int(r.get("port") or 0))
            for r in stale
        ):
            # The profile's last runtime died and something else now holds its port: an
            # older companion may have sent it our token. That token is retired.
            request["token_compromised"] = True
        if request.get("image"):  # Colab's image in a container, not `serve` (container.py)
            return {**container.ensure(request, info), **workspace}
        if info is None and container.running_for(profile):
            raise AgentError(f"profile {profile!r} runs a container here; stop it first")
        if info is not None:
            conflict = gateway_launch.mismatch(info, request, profile)
            if conflict:
                raise AgentError(conflict)
            claim = register_token(info["token_file"], request)
            return {**info, **claim, **workspace, "reattached": True, "log": str(log_path(profile))}
        return {**start_runtime(profile, request), **workspace}


def sync_workspace(request: EnsureRequest) -> EnsureAnswer:
    """Clone or update the requested git repository in the workdir (before the runtime)."""
    spec = request.get("git")
    if not spec:
        return {}
    workdir = request.get("workdir")
    if not workdir:
        url, _ = split_git_spec(spec)
        name = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git") or "workspace"
        workdir = os.path.join("~", name)
        request["workdir"] = workdir
    try:
        return sync_repository(server_path(workdir), spec, request.get("git_token"))
    except WorkspaceError as e:
        raise AgentError(str(e)) from e


def stop(request: StopRequest) -> StopAnswer:
    """Stop the profile's runtime and every kernel it started; leave no orphans."""
    profile = valid_profile(request.get("profile", "default"))
    with profile_lock(profile):
        removed = container.stop(request)  # a profile runs a container or `serve`, not both
        if removed:
            return removed
        info = runtime_for(profile)
        if info is None:
            return {"stopped": False}
        pid = int(info["pid"])
        try:
            server = psutil.Process(pid)
            # Kernels run in sessions of their own: note them now to reap them after.
            family = [server, *server.children(recursive=True)]
        except psutil.NoSuchProcess:
            return {"stopped": False}
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        _, alive = psutil.wait_procs(family, timeout=STOP_DEADLINE)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=5)
        with contextlib.suppress(FileNotFoundError):
            (Path(jupyter_runtime_dir()) / f"colabremote-{pid}.json").unlink()
        return {"stopped": True, "pid": pid, "processes": len(family)}


def status(request: Request) -> StatusAnswer:
    """The runtimes running for this user (all profiles)."""
    return {"runtimes": running_servers(), "containers": container.status(request)}


def info(request: Request) -> InfoAnswer:
    """Version and interpreter, so the companion can check compatibility."""
    return {"version": __version__, "python": sys.version.split()[0], "executable": sys.executable}


ACTIONS: dict[str, t.Callable[[t.Any], t.Mapping[str, t.Any]]] = {
    "info": info,
    "ensure": ensure,
    "stop": stop,
    "status": status,
    "container-doctor": container.doctor,
}
