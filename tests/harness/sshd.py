"""Real OpenSSH servers for tests: sshd on loopback or inside a network namespace.

Everything here starts real processes (/usr/sbin/sshd, nsenter) and stops them by PID in
teardown; every wait has a deadline. Traffic stays on 127.0.0.1 or inside the veth link of a
namespace from `netns.remote_host_netns()`.

`run_sshd(tmp_path, ...)` gives a running `SSHServer` (context manager); client keys,
known_hosts and ssh_config come from `ssh_client.SSHClientFiles`, accounts with a password
from `accounts.password_account()`.

Gotchas measured with OpenSSH 9.2 (Debian 12):
- sshd only honours the FIRST `SetEnv` line of its config (later lines are ignored silently),
  so all variables go on one line; `SetEnv` does override PATH and HOME (applied after them).
- sshd_config is "first value wins": `extra_config` lines are therefore placed before the
  harness defaults (a `Match` block and everything after it goes at the end).
- As root sshd needs `/run/sshd` (privilege separation directory); it is created if missing.
- sshd's per-connection children, and remote commands (they run in their own session), outlive
  a SIGTERM to the listener; teardown kills the listener, its descendants, and every process
  whose environment carries the server's marker variable (catches daemonised remote runtimes).
- The OpenSSH client takes `~` from the passwd database, not from $HOME: a fake HOME only
  affects paramiko (os.path.expanduser). Use `ssh -F FILE` for the OpenSSH client.
- Keyboard-interactive needs `use_pam=True` (without PAM Linux sshd has no kbd-int device);
  with PAM a failed password costs ~2 s (pam_unix fail delay).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import psutil
import pytest

from .accounts import PasswordUser
from .netns import NetNS
from .processes import SYSTEM_PATH, free_port, is_live, stop_processes
from .ssh_client import KeyPair, known_hosts_name, make_keypair

SSHD = "/usr/sbin/sshd"
MARKER_VAR = "COLABREMOTE_SSHD_TEST"


def require_sshd() -> None:
    """Skip the calling test unless OpenSSH's sshd and ssh-keygen are usable as root."""
    if os.geteuid() != 0:
        pytest.skip("the sshd harness runs sshd as root (PermitRootLogin, /run/sshd)")
    if not os.access(SSHD, os.X_OK) or shutil.which("ssh-keygen") is None:
        pytest.skip(f"{SSHD} / ssh-keygen missing: apt-get install openssh-server")


@dataclass
class SSHServer:
    """A running sshd: where it listens, its host key, its files, and the remote environment."""

    proc: subprocess.Popen
    host: str
    port: int
    dir: Path
    config_path: Path
    log_path: Path
    host_key: KeyPair
    authorized_keys_dir: Path
    remote_env: dict[str, str]
    marker: str
    netns: NetNS | None = None
    password_user: PasswordUser | None = None
    clients: list[paramiko.SSHClient] = field(default_factory=list)

    @property
    def pid(self) -> int:
        """The listener's PID."""
        return self.proc.pid

    @property
    def host_key_path(self) -> Path:
        """The private host key file."""
        return self.host_key.path

    @property
    def host_pkey(self) -> paramiko.PKey:
        """The server's public host key as a paramiko PKey."""
        return self.host_key.public_key

    @property
    def known_hosts_name(self) -> str:
        """`[host]:port` (or `host` on port 22), as in known_hosts."""
        return known_hosts_name(self.host, self.port)

    @property
    def known_hosts_line(self) -> str:
        """The known_hosts line OpenSSH would write for this server."""
        kind, b64 = self.host_key.public_line.split()[:2]
        return f"{self.known_hosts_name} {kind} {b64}"

    @property
    def remote_home(self) -> Path:
        """HOME of remote sessions (SetEnv)."""
        return Path(self.remote_env["HOME"])

    def log(self) -> str:
        """Everything sshd logged so far (LogLevel VERBOSE, -e: stderr)."""
        return self.log_path.read_text(errors="replace")

    def authorize(self, key: KeyPair, user: str = "root") -> None:
        """Allow key to log in as user (AuthorizedKeysFile DIR/%u, read on every login)."""
        path = self.authorized_keys_dir / user
        with open(path, "a") as f:
            f.write(key.public_line + "\n")

    def connect(
        self,
        key: KeyPair | None = None,
        *,
        user: str = "root",
        password: str | None = None,
        known_hosts: Path | None = None,
        timeout: float = 10.0,
        **kwargs,
    ) -> paramiko.SSHClient:
        """A paramiko client logged in (RejectPolicy; trusts only this server's host key).

        Closed at teardown; pass known_hosts to use a file instead of this server's key.
        """
        client = paramiko.SSHClient()
        if known_hosts is not None:
            client.load_host_keys(str(known_hosts))
        else:
            client.get_host_keys().add(
                self.known_hosts_name, self.host_key.key_type, self.host_pkey
            )
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        self.clients.append(client)
        client.connect(
            self.host,
            self.port,
            username=user,
            password=password,
            key_filename=str(key.path) if key else None,
            look_for_keys=False,
            allow_agent=False,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            **kwargs,
        )
        return client

    def processes(self) -> list[psutil.Process]:
        """Live processes of this server: listener, descendants, sessions carrying the marker."""
        found: dict[int, psutil.Process] = {}
        with contextlib.suppress(psutil.Error):
            top = psutil.Process(self.proc.pid)
            found[top.pid] = top
            for c in top.children(recursive=True):
                found[c.pid] = c
        cfg = str(self.config_path)
        for p in psutil.process_iter():
            if p.pid in found or p.pid == os.getpid():
                continue
            try:
                if cfg in p.cmdline() or p.environ().get(MARKER_VAR) == self.marker:
                    found[p.pid] = p
            except psutil.Error:
                continue
        return [p for p in found.values() if is_live(p)]

    def stop(self, timeout: float = 5.0) -> None:
        """Close clients, then stop sshd and everything it started (by PID), bounded."""
        for c in self.clients:
            with contextlib.suppress(Exception):
                c.close()
        for _ in range(3):
            procs = self.processes()
            if not procs:
                break
            stop_processes(procs, timeout=timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)


_sshd_counter = itertools.count(1)


def _python_path_dirs(tmp: Path) -> list[str]:
    """PATH entries making `python3`/`jupyter` resolve to this interpreter's environment."""
    bindir = Path(sys.executable).parent
    dirs = [str(bindir)]
    if not (bindir / "python3").exists():
        shim = tmp / "bin"
        shim.mkdir(exist_ok=True)
        script = shim / "python3"
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        script.chmod(0o755)
        dirs.insert(0, str(shim))
    return dirs


def _setenv_line(env: dict[str, str]) -> str:
    """One `SetEnv` line (sshd ignores all but the first), values quoted when needed."""
    parts = []
    for k, v in env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) or any(c in v for c in '"\n\\'):
            raise ValueError(f"cannot pass {k}={v!r} through sshd SetEnv")
        parts.append(f'{k}="{v}"' if (" " in v or "\t" in v or "#" in v) else f"{k}={v}")
    return "SetEnv " + " ".join(parts)


def _split_extra(extra: str | list[str] | None) -> tuple[list[str], list[str]]:
    """extra_config split into (lines before the defaults, Match block at the end)."""
    if extra is None:
        return [], []
    lines = extra.splitlines() if isinstance(extra, str) else list(extra)
    if any(line.strip().lower().startswith("setenv") for line in lines):
        raise ValueError("use set_env=: sshd honours only the first SetEnv line")
    for i, line in enumerate(lines):
        if line.strip().lower().startswith("match "):
            return lines[:i], lines[i:]
    return lines, []


def _wait_for_banner(
    proc: subprocess.Popen, host: str, port: int, deadline: float
) -> tuple[bool, str]:
    """Wait until host:port answers with an SSH banner; (False, reason) if sshd exited."""
    end = time.monotonic() + deadline
    last = "no attempt"
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False, f"sshd exited with code {proc.returncode}"
        try:
            with socket.create_connection((host, port), timeout=1.0) as s:
                s.settimeout(max(0.1, min(2.0, end - time.monotonic())))
                data = b""
                while b"\n" not in data and len(data) < 512:
                    chunk = s.recv(512)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith(b"SSH-"):
                    return True, data.split(b"\r\n")[0].decode(errors="replace")
                last = f"unexpected banner {data[:80]!r}"
        except OSError as e:
            last = repr(e)
        time.sleep(0.02)
    raise TimeoutError(f"sshd on {host}:{port} gave no SSH banner within {deadline} s ({last})")


@contextlib.contextmanager
def run_sshd(
    tmp_path: Path,
    *,
    netns: NetNS | None = None,
    password_user: PasswordUser | None = None,
    extra_config: str | list[str] | None = None,
    set_env: dict[str, str | None] | None = None,
    port: int | None = None,
    use_pam: bool = False,
    authorize: list[KeyPair] | None = None,
    name: str | None = None,
    deadline: float = 15.0,
) -> Iterator[SSHServer]:
    """Start `/usr/sbin/sshd -D -e -f CONFIG` from a temp config; stop it and its children after.

    Listens on 127.0.0.1 (free port), or inside `netns` on its address (port 22 by default,
    started with nsenter --net=). Fresh ed25519 host key; root login by key
    (`AuthorizedKeysFile DIR/authorized_keys/%u`); password auth only for `password_user`
    (`PasswordAuthentication yes`, plus keyboard-interactive when `use_pam`). Remote sessions
    get, via SetEnv: HOME, JUPYTER_{DATA,RUNTIME,CONFIG}_DIR under DIR/remote, PATH starting
    with this interpreter's bin directory, and a marker variable used to find their processes
    at teardown; `set_env` adds/overrides variables (None removes one). `extra_config` lines
    take precedence over the defaults (first value wins in sshd_config).
    Ready when the port answers with an SSH banner (bounded by `deadline`).
    """
    require_sshd()
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    base = name or "sshd"
    d = tmp_path / base
    while d.exists():
        d = tmp_path / f"{base}-{next(_sshd_counter)}"
    d.mkdir(parents=True)
    host_key = make_keypair(d / "ssh_host_ed25519_key", comment=f"host-{d.name}")
    ak_dir = d / "authorized_keys"
    ak_dir.mkdir()
    remote = d / "remote"
    marker = f"{os.getpid()}-{d.name}-{secrets.token_hex(4)}"
    env: dict[str, str | None] = {
        "HOME": str(remote / "home"),
        "JUPYTER_DATA_DIR": str(remote / "data"),
        "JUPYTER_RUNTIME_DIR": str(remote / "runtime"),
        "JUPYTER_CONFIG_DIR": str(remote / "config"),
        "PATH": ":".join([*_python_path_dirs(d), SYSTEM_PATH]),
        MARKER_VAR: marker,
        **(set_env or {}),
    }
    remote_env = {k: v for k, v in env.items() if v is not None}
    for k in ("HOME", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR"):
        if k in remote_env:
            Path(remote_env[k]).mkdir(parents=True, exist_ok=True)

    host = netns.addr if netns else "127.0.0.1"
    before, match_block = _split_extra(extra_config)
    users = ["root"] + ([password_user.name] if password_user else [])
    password = "yes" if password_user else "no"
    kbd = "yes" if (password_user and use_pam) else "no"

    def config(port: int) -> str:
        lines = [
            *before,
            f"Port {port}",
            f"ListenAddress {host}",
            "AddressFamily inet",
            f"HostKey {host_key.path}",
            f"PidFile {d / 'sshd.pid'}",
            f"AuthorizedKeysFile {ak_dir}/%u",
            f"UsePAM {'yes' if use_pam else 'no'}",
            "StrictModes no",
            "PermitRootLogin yes",
            "PubkeyAuthentication yes",
            f"PasswordAuthentication {password}",
            f"KbdInteractiveAuthentication {kbd}",
            f"AllowUsers {' '.join(users)}",
            "AllowTcpForwarding yes",
            "AllowStreamLocalForwarding yes",
            "GatewayPorts no",
            "X11Forwarding no",
            "PermitUserEnvironment no",
            "PrintMotd no",
            "PrintLastLog no",
            "UseDNS no",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
            _setenv_line(remote_env),
            *match_block,
        ]
        return "\n".join(lines) + "\n"

    cfg = d / "sshd_config"
    log_path = d / "sshd.log"
    fixed_port = port if port is not None else (22 if netns else None)
    server = None
    try:
        for _attempt in range(5):
            chosen = fixed_port if fixed_port is not None else free_port(host)
            cfg.write_text(config(chosen))
            argv = [SSHD, "-D", "-e", "-f", str(cfg)]
            if netns:
                argv = netns.nsenter(argv)
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(
                    argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            server = SSHServer(
                proc=proc,
                host=host,
                port=chosen,
                dir=d,
                config_path=cfg,
                log_path=log_path,
                host_key=host_key,
                authorized_keys_dir=ak_dir,
                remote_env=remote_env,
                marker=marker,
                netns=netns,
                password_user=password_user,
            )
            ok, why = _wait_for_banner(proc, host, chosen, deadline)
            if ok:
                break
            if fixed_port is None and "Address already in use" in server.log():
                server.stop()
                continue  # lost a race for the free port: try another
            raise RuntimeError(f"sshd failed to start: {why}\n{server.log()}")
        else:
            raise RuntimeError(f"sshd could not bind a free port\n{server.log()}")
        for key in authorize or []:
            server.authorize(key)
        yield server
    finally:
        if server is not None:
            server.stop()
