"""Real OpenSSH servers for tests: sshd on loopback or inside a network namespace, client files.

Everything here starts real processes (/usr/sbin/sshd, ip, nsenter) and stops them by PID in
teardown; every wait has a deadline. Traffic stays on 127.0.0.1 or inside veth links between
this host and network namespaces created here (10.231.0.0/16, /30 per namespace).

Main entry points:
- `run_sshd(tmp_path, ...)`: a running `SSHServer` (context manager).
- `SSHClientFiles(dir)`: a client key, `known_hosts` and `ssh_config` for one or more servers;
  `.make_home(dir)` builds a fake HOME with `.ssh/{config,known_hosts,id_ed25519}`.
- `password_account()`: a local account with a random password (context manager).
- `remote_host_netns()`: a `NetNS` "remote host" whose link can be cut and restored.

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
- A network namespace's link cut with `ip link set DEV down` removes the connected route; the
  fallback dead-end route keeps those packets from following the default route off the host.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import itertools
import os
import pwd
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

SSHD = "/usr/sbin/sshd"
SSH = "/usr/bin/ssh"
PASSWORD_USER = "colabremote-test"
MARKER_VAR = "COLABREMOTE_SSHD_TEST"
NETNS_PREFIX = "crtest"
NETNS_SUBNET = "10.231"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_LOCK_DIR = Path("/run")


# ---------------------------------------------------------------------------------------------
# small helpers


def _run(argv: list[str], *, timeout: float = 10.0, check: bool = True, input: str | None = None):
    """subprocess.run with a deadline, captured text output, and the command in errors."""
    res = subprocess.run(
        argv,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if check and res.returncode != 0:
        raise RuntimeError(f"{argv} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on host."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def known_hosts_name(host: str, port: int) -> str:
    """The host field OpenSSH writes to known_hosts: `host` for port 22, else `[host]:port`."""
    return host if port == 22 else f"[{host}]:{port}"


def tcp_connect(
    host: str,
    port: int,
    *,
    timeout: float = 5.0,
    user_timeout_ms: int | None = None,
    nodelay: bool = True,
) -> socket.socket:
    """A connected TCP socket (for paramiko's `sock=`), optionally with TCP_USER_TIMEOUT."""
    sock = socket.create_connection((host, port), timeout=timeout)
    if nodelay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if user_timeout_ms is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, user_timeout_ms)
    return sock


@contextlib.contextmanager
def _file_lock(path: Path, deadline: float) -> Iterator[None]:
    """An exclusive flock on path, acquired within deadline seconds (shared across processes)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        end = time.monotonic() + deadline
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > end:
                    raise TimeoutError(f"could not lock {path} within {deadline} s") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def require_sshd() -> None:
    """Skip the calling test unless OpenSSH's sshd and ssh-keygen are usable as root."""
    if os.geteuid() != 0:
        pytest.skip("the sshd harness runs sshd as root (PermitRootLogin, /run/sshd)")
    if not os.access(SSHD, os.X_OK) or shutil.which("ssh-keygen") is None:
        pytest.skip(f"{SSHD} / ssh-keygen missing: apt-get install openssh-server")


def stop_processes(procs: list[psutil.Process], timeout: float = 5.0) -> None:
    """SIGTERM the processes, SIGKILL those still alive after timeout; bounded, polled at 20 ms.

    Zombies count as gone (psutil.wait_procs would wait for a non-child zombie until its
    timeout); the caller reaps its own children.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.send_signal(sig)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            procs = [p for p in procs if _is_live(p)]
            if not procs:
                return
            time.sleep(0.02)


def net_connections(p: psutil.Process, kind: str = "tcp4") -> list:
    """A process's sockets, in its own network namespace (psutil 6 renamed the method)."""
    method = getattr(p, "net_connections", None) or p.connections
    return method(kind)


def _is_live(p: psutil.Process) -> bool:
    """True unless the process is gone or a zombie (zombies cannot be killed, only reaped)."""
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# ---------------------------------------------------------------------------------------------
# keys


@dataclass
class KeyPair:
    """An OpenSSH key pair on disk: `path` (private, no passphrase) and `path`.pub."""

    path: Path

    @property
    def pub_path(self) -> Path:
        """The public key file."""
        return self.path.with_name(self.path.name + ".pub")

    @property
    def public_line(self) -> str:
        """`ssh-ed25519 AAAA... comment`, as in authorized_keys."""
        return self.pub_path.read_text().strip()

    @property
    def key_type(self) -> str:
        """The key type, e.g. ssh-ed25519."""
        return self.public_line.split()[0]

    @property
    def public_key(self) -> paramiko.PKey:
        """The public key as a paramiko PKey."""
        kind, b64 = self.public_line.split()[:2]
        return paramiko.PKey.from_type_string(kind, base64.b64decode(b64))

    @property
    def pkey(self) -> paramiko.PKey:
        """The private key as a paramiko PKey."""
        return paramiko.PKey.from_path(self.path)


def make_keypair(path: Path, comment: str = "colabremote-test") -> KeyPair:
    """Generate a fresh ed25519 key pair at path (ssh-keygen -q -t ed25519 -N '')."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return KeyPair(path)


# ---------------------------------------------------------------------------------------------
# password account


@dataclass
class PasswordUser:
    """A local account with a known password (for password / keyboard-interactive auth)."""

    name: str
    password: str
    home: Path


@contextlib.contextmanager
def password_account(
    name: str = PASSWORD_USER, *, deadline: float = 30.0
) -> Iterator[PasswordUser]:
    """A system account with a fresh random password, locked again on exit.

    Creates the account once (`useradd --system --create-home`, idempotent), sets a random
    password with chpasswd, and locks it (`usermod -L`) afterwards so no usable password stays
    behind (a system sshd on port 22 would accept it). Users of the account are serialised
    across processes by a lock file, so parallel runs never change a password in use.
    With `UsePAM no` sshd checks /etc/shadow itself (yescrypt hashes work on Debian 12).
    The account cannot read root's files: tmp_path (under /tmp/pytest-of-root, mode 0700) and
    an interpreter under /root are out of its reach; use it for authentication tests.
    """
    if os.geteuid() != 0:
        pytest.skip("creating a password account needs root")
    for tool in ("useradd", "chpasswd", "usermod"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing (package passwd)")
    with _file_lock(_LOCK_DIR / f"{name}.lock", deadline):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            _run(
                [
                    "useradd",
                    "--system",
                    "--create-home",
                    "--shell",
                    "/bin/sh",
                    "--comment",
                    "jupyter-colab-remote tests",
                    name,
                ]
            )
            entry = pwd.getpwnam(name)
        password = "crt-" + secrets.token_urlsafe(18)
        _run(["chpasswd"], input=f"{name}:{password}\n")
        try:
            yield PasswordUser(name, password, Path(entry.pw_dir))
        finally:
            _run(["usermod", "-L", name], check=False)


# ---------------------------------------------------------------------------------------------
# network namespaces

_ns_counter = itertools.count(1)
_live_netns: set[str] = set()
_NS_NAME = re.compile(r"^(?P<prefix>.+)-(?P<pid>\d+)-(?P<n>\d+)$")
_NETNS_LOCK = _LOCK_DIR / "colabremote-netns.lock"
_DEV_NAME = re.compile(r"^cr[hd](?P<pid>\d+)-(?P<n>\d+)$")


@dataclass
class NetNS:
    """A network namespace acting as a remote host, joined to this host by a veth link.

    `addr` is the remote's address (inside), `host_addr` this host's end. While the link is
    down, packets to `addr` are silently dropped (a fallback route through a dead-end veth
    keeps them from following the default route off the machine), so connects time out as
    on a real network failure and established connections stall.
    """

    name: str
    host_dev: str
    ns_dev: str
    deadend_dev: str
    host_addr: str
    addr: str

    @property
    def path(self) -> str:
        """The namespace's bind mount, for nsenter --net=."""
        return f"/run/netns/{self.name}"

    def nsenter(self, argv: list[str]) -> list[str]:
        """argv prefixed to run inside the namespace's network stack."""
        return ["nsenter", f"--net={self.path}", *argv]

    def run(self, argv: list[str], *, timeout: float = 10.0, check: bool = True):
        """Run a command inside the namespace (bounded), returning CompletedProcess."""
        return _run(self.nsenter(argv), timeout=timeout, check=check)

    def link_down(self) -> None:
        """Cut the link (ip link set HOST_DEV down): packets are dropped silently."""
        _run(["ip", "link", "set", self.host_dev, "down"])

    def link_up(self) -> None:
        """Restore the link (ip link set HOST_DEV up)."""
        _run(["ip", "link", "set", self.host_dev, "up"])

    def pids(self) -> list[int]:
        """PIDs of processes inside the namespace."""
        out = _run(["ip", "netns", "pids", self.name], check=False).stdout
        return [int(x) for x in out.split()]

    def exists(self) -> bool:
        """Whether the namespace still exists."""
        return self.name in _netns_names()


def _netns_names() -> list[str]:
    """Names from `ip netns list`."""
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _link_names() -> list[str]:
    """Interface names in this namespace (without @peer suffixes)."""
    out = _run(["ip", "-o", "link", "show"], check=False).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def _stale(pid: str, name: str) -> bool:
    """Whether an object named for pid belongs to no live harness (crashed or finished run)."""
    if int(pid) == os.getpid():
        return name not in _live_netns
    return not psutil.pid_exists(int(pid))


def cleanup_stale_netns(prefix: str = NETNS_PREFIX, *, deadline: float = 15.0) -> list[str]:
    """Delete namespaces/links left by crashed runs (their creating PID is gone); return names."""
    with _file_lock(_NETNS_LOCK, deadline):
        return _cleanup_stale_netns(prefix)


def _cleanup_stale_netns(prefix: str) -> list[str]:
    """cleanup_stale_netns, with the lock held."""
    removed = []
    for ns in _netns_names():
        m = _NS_NAME.match(ns)
        if m and m["prefix"] == prefix and _stale(m["pid"], ns):
            _delete_netns(ns)
            removed.append(ns)
    live_tags = {_NS_NAME.match(n)["pid"] + "-" + _NS_NAME.match(n)["n"] for n in _live_netns}
    for dev in _link_names():
        m = _DEV_NAME.match(dev)
        if not m:
            continue
        tag = f"{m['pid']}-{m['n']}"
        mine = int(m["pid"]) == os.getpid()
        if (mine and tag not in live_tags) or (not mine and not psutil.pid_exists(int(m["pid"]))):
            _run(["ip", "link", "del", dev], check=False)
            removed.append(dev)
    return removed


def _delete_netns(name: str) -> None:
    """Kill every process inside the namespace, then delete it."""
    out = _run(["ip", "netns", "pids", name], check=False).stdout
    procs = []
    for pid in out.split():
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(int(pid)))
    stop_processes(procs, timeout=3.0)
    _run(["ip", "netns", "del", name], check=False)


def _used_subnets() -> set[int]:
    """Indexes of 10.231.X.Y/30 blocks already used by addresses or routes on this host."""
    used = set()
    text = _run(["ip", "-o", "-4", "addr", "show"], check=False).stdout
    text += _run(["ip", "-4", "route", "show"], check=False).stdout
    for a, b in re.findall(rf"\b{re.escape(NETNS_SUBNET)}\.(\d+)\.(\d+)", text):
        used.add(int(a) * 64 + int(b) // 4)
    return used


@contextlib.contextmanager
def remote_host_netns(
    name_prefix: str = NETNS_PREFIX, *, deadline: float = 15.0
) -> Iterator[NetNS]:
    """A fresh network namespace linked to this host by veth; everything removed on exit.

    Inside: lo up, DEV with 10.231.X.Y+2/30. Host side: DEV with .Y+1/30, plus a dead-end veth
    route (metric 9999) so traffic for the /30 is dropped, never routed off the machine, while
    the link is down. Names carry this PID and a counter; leftovers of dead PIDs are removed
    first. Skips the test if namespaces cannot be created (no root / no CAP_SYS_ADMIN).
    """
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing (iproute2 / util-linux)")
    n = next(_ns_counter)
    pid = os.getpid()
    ns = None
    try:
        with _file_lock(_NETNS_LOCK, deadline):
            _cleanup_stale_netns(name_prefix)
            free = next(i for i in range(1, 64 * 256) if i not in _used_subnets())
            base = f"{NETNS_SUBNET}.{free // 64}.{(free % 64) * 4}"
            prefix3, last = base.rsplit(".", 1)
            name = f"{name_prefix}-{pid}-{n}"
            res = _run(["ip", "netns", "add", name], check=False)
            if res.returncode != 0:
                pytest.skip(f"cannot create a network namespace here: {res.stderr.strip()}")
            _live_netns.add(name)
            ns = NetNS(
                name=name,
                host_dev=f"crh{pid}-{n}",
                ns_dev=f"crn{pid}-{n}",
                deadend_dev=f"crd{pid}-{n}",
                host_addr=f"{prefix3}.{int(last) + 1}",
                addr=f"{prefix3}.{int(last) + 2}",
            )
            # The dead-end route first: traffic for the /30 can never leave through eth0.
            peer = f"cre{pid}-{n}"
            res = _run(
                ["ip", "link", "add", ns.deadend_dev, "type", "veth", "peer", "name", peer],
                check=False,
            )
            if res.returncode != 0:
                pytest.skip(f"cannot create a veth pair here: {res.stderr.strip()}")
            _run(["ip", "link", "set", ns.deadend_dev, "up"])  # its peer stays down
            _run(["ip", "route", "add", f"{base}/30", "dev", ns.deadend_dev, "metric", "9999"])
            _run(
                ["ip", "neigh", "replace", ns.addr, "lladdr", "02:00:00:00:00:01"]
                + ["dev", ns.deadend_dev, "nud", "permanent"]
            )
            _run(
                ["ip", "link", "add", ns.host_dev, "type", "veth"]
                + ["peer", "name", ns.ns_dev, "netns", name]
            )
            _run(["ip", "addr", "add", f"{ns.host_addr}/30", "dev", ns.host_dev])
            _run(["ip", "link", "set", ns.host_dev, "up"])
            _run(["ip", "-n", name, "link", "set", "lo", "up"])
            _run(["ip", "-n", name, "addr", "add", f"{ns.addr}/30", "dev", ns.ns_dev])
            _run(["ip", "-n", name, "link", "set", ns.ns_dev, "up"])
        yield ns
    finally:
        name = f"{name_prefix}-{pid}-{n}"
        if name in _live_netns:
            _delete_netns(name)
            _live_netns.discard(name)
        for dev in (f"crh{pid}-{n}", f"crd{pid}-{n}"):
            if dev in _link_names():
                _run(["ip", "link", "del", dev], check=False)


# ---------------------------------------------------------------------------------------------
# sshd


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
        return [p for p in found.values() if _is_live(p)]

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


# ---------------------------------------------------------------------------------------------
# client files


@dataclass
class _HostEntry:
    """One `Host` block of the generated ssh_config."""

    alias: str
    server: SSHServer
    user: str
    proxy_jump: str | None
    extra: dict[str, str]


class SSHClientFiles:
    """A client identity with known_hosts and ssh_config files, as a user's ~/.ssh holds them.

    `add_host(alias, server)` authorizes the key on the server, appends the server's host key
    to known_hosts and writes a `Host alias` block (HostName, Port, User, IdentityFile,
    UserKnownHostsFile, IdentitiesOnly, StrictHostKeyChecking yes, BatchMode yes, ProxyJump).
    """

    def __init__(self, directory: Path) -> None:
        """Create DIR with a fresh ed25519 key pair (id_ed25519), empty known_hosts and config."""
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.key = make_keypair(directory / "id_ed25519", comment="colabremote-test-client")
        self.known_hosts = directory / "known_hosts"
        self.known_hosts.write_text("")
        self.config_path = directory / "ssh_config"
        self.hosts: dict[str, _HostEntry] = {}
        self.clients: list[paramiko.SSHClient] = []
        self._write_config()

    def add_host(
        self,
        alias: str,
        server: SSHServer,
        *,
        user: str = "root",
        proxy_jump: str | None = None,
        authorize: bool = True,
        extra: dict[str, str] | None = None,
    ) -> None:
        """Trust server, optionally authorize our key for user there, add a `Host alias` block."""
        if authorize:
            server.authorize(self.key, user)
        with open(self.known_hosts, "a") as f:
            f.write(server.known_hosts_line + "\n")
        self.hosts[alias] = _HostEntry(alias, server, user, proxy_jump, dict(extra or {}))
        self._write_config()

    def config_text(self, *, explicit_paths: bool = True) -> str:
        """The ssh_config text; without explicit_paths, IdentityFile/UserKnownHostsFile are
        left to their ~/.ssh defaults (for a fake HOME)."""
        out = []
        for h in self.hosts.values():
            out.append(f"Host {h.alias}")
            opts = {
                "HostName": h.server.host,
                "Port": str(h.server.port),
                "User": h.user,
                "StrictHostKeyChecking": "yes",
                "BatchMode": "yes",
                "IdentitiesOnly": "yes",
            }
            if explicit_paths:
                opts["IdentityFile"] = str(self.key.path)
                opts["UserKnownHostsFile"] = str(self.known_hosts)
                opts["GlobalKnownHostsFile"] = "/dev/null"
            if h.proxy_jump:
                opts["ProxyJump"] = h.proxy_jump
            opts.update(h.extra)
            out += [f"    {k} {v}" for k, v in opts.items()]
            out.append("")
        return "\n".join(out)

    def _write_config(self) -> None:
        """Rewrite the ssh_config file."""
        self.config_path.write_text(self.config_text())

    def paramiko_config(self) -> paramiko.SSHConfig:
        """The ssh_config parsed by paramiko."""
        return paramiko.SSHConfig.from_path(str(self.config_path))

    def ssh_argv(self, *args: str) -> list[str]:
        """An OpenSSH client command line using this config: ssh -F CONFIG ARGS."""
        return [SSH, "-F", str(self.config_path), *args]

    def connect(self, alias: str, *, timeout: float = 10.0) -> paramiko.SSHClient:
        """A paramiko client for alias resolved through the ssh_config (incl. one-hop
        ProxyJump chains), RejectPolicy against our known_hosts; closed by close()."""
        cfg = self.paramiko_config().lookup(alias)
        sock = None
        if "proxyjump" in cfg:
            jump = self.connect(cfg["proxyjump"], timeout=timeout)
            sock = jump.get_transport().open_channel(
                "direct-tcpip", (cfg["hostname"], int(cfg.get("port", 22))), ("127.0.0.1", 0)
            )
        client = paramiko.SSHClient()
        client.load_host_keys(os.path.expanduser(cfg["userknownhostsfile"].split()[0]))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        self.clients.append(client)
        client.connect(
            cfg["hostname"],
            int(cfg.get("port", 22)),
            username=cfg.get("user"),
            key_filename=[os.path.expanduser(p) for p in cfg["identityfile"]],
            look_for_keys=False,
            allow_agent=False,
            sock=sock,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
        return client

    def make_home(self, home: Path, *, explicit_paths: bool = False) -> Path:
        """A fake HOME with .ssh/config, .ssh/known_hosts, .ssh/id_ed25519(.pub); returns it.

        By default the config relies on the ~/.ssh defaults for key and known_hosts, so code
        under test must find them itself (paramiko honours $HOME; OpenSSH ignores it).
        """
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True)
        ssh_dir.chmod(0o700)
        (ssh_dir / "config").write_text(self.config_text(explicit_paths=explicit_paths))
        shutil.copyfile(self.known_hosts, ssh_dir / "known_hosts")
        shutil.copyfile(self.key.path, ssh_dir / "id_ed25519")
        shutil.copyfile(self.key.pub_path, ssh_dir / "id_ed25519.pub")
        for name in ("config", "known_hosts", "id_ed25519"):
            (ssh_dir / name).chmod(0o600)
        return home

    def close(self) -> None:
        """Close every client opened by connect()."""
        for c in reversed(self.clients):
            with contextlib.suppress(Exception):
                c.close()
        self.clients.clear()


# ---------------------------------------------------------------------------------------------
# fixtures (register with `pytest_plugins = ["sshd"]` in conftest.py, or import explicitly)


@pytest.fixture
def ssh_client_files(tmp_path):
    """An SSHClientFiles in tmp_path/client, its clients closed after the test."""
    files = SSHClientFiles(tmp_path / "client")
    yield files
    files.close()


@pytest.fixture
def sshd_server(tmp_path, ssh_client_files):
    """An sshd on loopback, known to ssh_client_files as `gpu-box` (root, key auth)."""
    with run_sshd(tmp_path, name="sshd") as server:
        ssh_client_files.add_host("gpu-box", server)
        yield server


@pytest.fixture
def remote_netns():
    """A network namespace "remote host" (NetNS), removed after the test."""
    with remote_host_netns() as ns:
        yield ns
