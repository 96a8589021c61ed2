"""The companion end to end: `jupyter colabremote start|stop|url|status|doctor` against real sshd.

Every test runs the companion as a user would (`python -m jupyter_colab_remote ...`, a fake
HOME with ~/.ssh, no terminal) against OpenSSH servers from tests/harness/sshd.py; the "remote host"
is this machine with the remote session's own HOME and Jupyter directories. Processes are
stopped by PID in `finally`, and every wait is bounded.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import termios
import time
from pathlib import Path

import paramiko
import psutil
import pytest

from tests.harness.accounts import password_account
from tests.harness.companion import (
    api,
    cli_argv,
    companion,
    companion_env,
    error_line,
    kill_runtimes,
    make_askpass,
    run_cli,
    run_code,
    runtime_files,
    start_companion,
    start_kernel,
    token_of,
)
from tests.harness.processes import (
    all_cmdlines,
    all_environs,
    family,
    free_port,
    net_connections,
    port_is_free,
    stop_process,
    wait_gone,
)
from tests.harness.runtime_api import wait_for
from tests.harness.ssh_client import make_keypair
from tests.harness.sshd import run_sshd

pytestmark = [pytest.mark.e2e, pytest.mark.needs_root]

ACCEPTED = re.compile(r"Accepted (?:publickey|password) for \S+ from \S+ port (\d+)")


def sha256_fingerprint(server) -> str:
    """The host key's fingerprint as `ssh-keygen -lf` shows it."""
    digest = hashlib.sha256(server.host_pkey.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def remote_leftovers(server) -> list[psutil.Process]:
    """Processes started through the server's sessions, other than sshd itself."""
    out = []
    for p in server.processes():
        try:
            if not p.name().startswith("sshd"):
                out.append(p)
        except psutil.Error:
            continue
    return out


def wait_no_remote_leftovers(server, deadline: float = 15.0) -> list[str]:
    """Wait (bounded) until nothing but sshd runs for the server; what is left."""
    end = time.monotonic() + deadline
    while True:
        left = remote_leftovers(server)
        if not left or time.monotonic() > end:
            return [f"{p.pid} {p.name()}" for p in left]
        time.sleep(0.1)


@pytest.fixture
def user(tmp_path, sshd_server, ssh_client_files):
    """A user of the companion: a fake HOME whose ~/.ssh knows `gpu-box`, and its environment."""
    home = ssh_client_files.make_home(tmp_path / "home")
    env = companion_env(home, tmp_path)
    try:
        yield home, env
    finally:
        kill_runtimes(env["JUPYTER_RUNTIME_DIR"])


def remote_runtime_dir(server) -> Path:
    """The runtime directory of the remote sessions (where the agent's runtime files go)."""
    return Path(server.remote_env["JUPYTER_RUNTIME_DIR"])


# ---------------------------------------------------------------------------------------------
# 1. start -> URL -> code; start again -> same token and kernel; stop -> nothing left


def recording_browser(path: Path, record: Path) -> str:
    """A $BROWSER program that only writes the URL it is given to `record` (no real browser
    here: what matters is which URL the companion opens, and that it opens it once)."""
    path.write_text(f'#!/bin/sh\necho "$1" >> {shlex.quote(str(record))}\n')
    path.chmod(0o700)
    return str(path)


def test_start_run_code_reattach_and_stop(tmp_path, sshd_server, user):
    """The whole life of a connection, as the user sees it."""
    home, env = user
    port = free_port()
    start = ["start", "gpu-box", "--port", str(port), "--json"]

    with companion(start, env, tmp_path / "logs") as first:
        rec = start_companion(first)
        assert rec["local_port"] == port and rec["host"] == "gpu-box"
        assert rec["reattached"] is False
        url = rec["url"]
        assert url.startswith(f"http://localhost:{port}/?token=")
        kid = start_kernel(url)
        assert run_code(url, kid, "x = 6*7; x") == ["42"]
        kernel_pid = int(run_code(url, kid, "import os; os.getpid()")[0])
        # Ctrl-C closes the tunnel only; the runtime and its kernel stay up on the remote.
        assert first.stop(signal.SIGINT) == 0
        assert "Traceback" not in first.stderr()
    assert port_is_free(port)
    assert psutil.pid_exists(rec["remote_pid"]) and psutil.pid_exists(kernel_pid)

    # Re-attach with --open: Colab opens in the user's browser once the URL is verified.
    opened = tmp_path / "opened.txt"
    browser_env = {**env, "BROWSER": recording_browser(tmp_path / "browser.sh", opened)}
    with companion([*start, "--open"], browser_env, tmp_path / "logs") as second:
        again = start_companion(second)
        text = wait_for(lambda: opened.exists() and opened.read_text(), 20, f"{opened} written")
        assert text.split() == ["https://colab.research.google.com/"]
        assert again["url"] == url  # same token, same local port
        assert again["reattached"] is True
        assert again["remote_pid"] == rec["remote_pid"]
        assert run_code(url, kid, "x") == ["42"]  # same kernel, variables intact
        procs = family(rec["remote_pid"])
        assert kernel_pid in {p.pid for p in procs}

        res = run_cli("stop", "gpu-box", env=env)
        assert res.returncode == 0, res.stderr
        assert "Traceback" not in res.stderr
        assert res.stdout.startswith(f"stopped the runtime on gpu-box (pid {rec['remote_pid']}")
        assert "tunnel closed" in res.stdout
        # `stop` ended the running companion before returning (SIGTERM: a clean exit).
        assert second.proc.poll() == 0
        assert "Traceback" not in second.stderr()
    assert wait_gone(procs) == [], "runtime or kernel still running after stop"
    assert wait_no_remote_leftovers(sshd_server) == []
    assert runtime_files(remote_runtime_dir(sshd_server)) == []
    assert port_is_free(port)

    # Stopping again is harmless and says so.
    res = run_cli("stop", "gpu-box", env=env)
    assert res.returncode == 0 and res.stdout.startswith("no runtime was running on gpu-box")


# ---------------------------------------------------------------------------------------------
# 2. no host: this machine becomes the runtime


def test_start_without_host_runs_this_machine(tmp_path):
    """`start --port P` detaches a local runtime; again re-attaches; `stop` ends it."""
    env = companion_env(tmp_path / "home", tmp_path)
    (tmp_path / "home").mkdir()
    try:
        # A taken port: the same one-line error as with a host, and no runtime is started.
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            res = run_cli("start", "--port", str(port), env=env)
        assert res.returncode == 6, res.stderr
        assert f"local port {port} is already in use" in error_line(res)
        assert runtime_files(env["JUPYTER_RUNTIME_DIR"]) == []

        res = run_cli("start", "--port", str(port), "--json", env=env, timeout=90)
        assert res.returncode == 0, res.stderr
        assert "Traceback" not in res.stderr
        rec = json.loads(res.stdout)
        assert rec["url"] == f"http://localhost:{port}/?token={token_of(rec)}"
        assert rec["host"] is None and rec["reattached"] is False
        pid = rec["remote_pid"]
        # Detached: its own session, still serving after `start` returned.
        assert os.getsid(pid) == pid
        kid = start_kernel(rec["url"])
        assert run_code(rec["url"], kid, "y = 'local'; y") == ["'local'"]

        opened = tmp_path / "opened.txt"
        browser = recording_browser(tmp_path / "browser.sh", opened)
        res = run_cli(
            "start",
            "--port",
            str(port),
            "--json",
            "--open",
            env={**env, "BROWSER": browser},
            timeout=90,
        )
        assert res.returncode == 0, res.stderr
        assert opened.read_text().split() == ["https://colab.research.google.com/"]
        again = json.loads(res.stdout)
        assert again["url"] == rec["url"] and again["reattached"] is True
        assert again["remote_pid"] == pid
        assert run_code(rec["url"], kid, "y") == ["'local'"]

        res = run_cli("url", env=env)
        assert res.returncode == 0 and res.stdout.strip() == rec["url"]

        # No usable browser (an SSH session, say): the URL still works; one line says so.
        res = run_cli("start", "--port", str(port), "--open", env={**env, "BROWSER": "false"})
        assert res.returncode == 0, res.stderr
        assert rec["url"] in res.stdout
        assert "could not open a browser here" in res.stderr and "Traceback" not in res.stderr
        # A headless box (no $BROWSER, no display): no console browser takes over the terminal.
        headless = {k: v for k, v in env.items() if k not in ("BROWSER", "WAYLAND_DISPLAY")}
        res = run_cli("start", "--port", str(port), "--open", env=headless)
        assert res.returncode == 0 and rec["url"] in res.stdout, res.stderr
        assert "could not open a browser here" in res.stderr

        procs = family(pid)
        res = run_cli("stop", env=env)
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith(f"stopped the runtime on this machine (pid {pid}")
        assert wait_gone(procs) == []
        assert runtime_files(env["JUPYTER_RUNTIME_DIR"]) == []
        assert port_is_free(port)
    finally:
        kill_runtimes(env["JUPYTER_RUNTIME_DIR"])


# ---------------------------------------------------------------------------------------------
# 3. ProxyJump through a bastion


def test_proxyjump_through_bastion(tmp_path, ssh_client_files):
    """`start` follows ProxyJump from ~/.ssh/config: the target sees the bastion as its peer.

    Two hops (`ProxyJump bastion,bastion2`) and a ProxyCommand reach the same runtime.
    """
    with (
        run_sshd(tmp_path, name="bastion") as bastion,
        run_sshd(tmp_path, name="bastion2") as bastion2,
        run_sshd(tmp_path, name="target") as target,
    ):
        ssh_client_files.add_host("bastion", bastion)
        ssh_client_files.add_host("bastion2", bastion2)
        ssh_client_files.add_host("gpu-via", target, proxy_jump="bastion")
        ssh_client_files.add_host("gpu-2hops", target, proxy_jump="bastion,bastion2")
        # OpenSSH as the ProxyCommand (its own config file: it ignores the fake HOME).
        ssh_cmd = " ".join(ssh_client_files.ssh_argv("-W", "%h:%p", "bastion"))
        ssh_client_files.add_host("gpu-cmd", target, extra={"ProxyCommand": ssh_cmd})
        home = ssh_client_files.make_home(tmp_path / "home")
        env = companion_env(home, tmp_path)
        port = free_port()
        with companion(
            ["start", "gpu-via", "--port", str(port), "--json"], env, tmp_path / "logs"
        ) as c:
            rec = start_companion(c)
            code, body = api(rec["url"], "/api/colab/build-info")
            assert code == 200 and body.startswith(b")]}'")
            # The runtime runs on the target, not on the bastion.
            assert len(runtime_files(remote_runtime_dir(target))) == 1
            assert runtime_files(remote_runtime_dir(bastion)) == []
            # The bastion authenticated us, and the target's SSH peer is a bastion sshd socket.
            assert "Accepted publickey for root" in bastion.log()
            peer_ports = {int(p) for p in ACCEPTED.findall(target.log())}
            assert peer_ports, target.log()
            owners = set()
            for p in bastion.processes():
                try:
                    for conn in net_connections(p, "tcp4"):
                        if conn.laddr.port in peer_ports and conn.raddr.port == target.port:
                            owners.add(p.pid)
                except psutil.Error:
                    continue
            assert owners, (peer_ports, bastion.log())
            assert "Traceback" not in c.stderr()

            # The same runtime through two hops, and through a ProxyCommand.
            hops2 = bastion2.log().count("Accepted publickey")
            for alias in ("gpu-2hops", "gpu-cmd"):
                res = run_cli("status", alias, "--json", env=env)
                assert res.returncode == 0, res.stderr
                [rt] = json.loads(res.stdout)["runtimes"]
                assert rt["pid"] == rec["remote_pid"], alias
            assert bastion2.log().count("Accepted publickey") == hops2 + 1


# ---------------------------------------------------------------------------------------------
# 4. host keys


def test_host_key_unknown_changed_and_accepted(tmp_path, sshd_server, user, ssh_client_files):
    """Unknown or changed host keys refuse to connect (exit 3); --accept-new-host-key trusts."""
    home, env = user
    known_hosts = home / ".ssh" / "known_hosts"
    fp = sha256_fingerprint(sshd_server)
    port = free_port()
    start = ["start", "gpu-box", "--port", str(port), "--json"]
    accepted_before = sshd_server.log().count("Accepted ")

    # Changed: known_hosts holds another key for [127.0.0.1]:PORT (same type, then another type).
    other = make_keypair(tmp_path / "other_host_key")
    other_type = tmp_path / "other_ecdsa"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(other_type)],
        check=True,
        timeout=10,
        stdin=subprocess.DEVNULL,
    )
    ecdsa_line = " ".join(Path(f"{other_type}.pub").read_text().split()[:2])
    for line in (" ".join(other.public_line.split()[:2]), ecdsa_line):
        text = f"{sshd_server.known_hosts_name} {line}\n"
        known_hosts.write_text(text)
        res = run_cli(*start, env=env)
        assert res.returncode == 3, res.stderr
        msg = error_line(res)
        assert "HOST KEY CHANGED" in msg and fp in msg, msg
        assert res.stdout == ""
        assert known_hosts.read_text() == text  # never "fixed" silently
    # Never authenticated, never started anything.
    assert sshd_server.log().count("Accepted ") == accepted_before
    assert runtime_files(remote_runtime_dir(sshd_server)) == []

    # Unknown: refused with the fingerprint and the option that accepts it.
    known_hosts.write_text("")
    res = run_cli(*start, env=env)
    assert res.returncode == 3, res.stderr
    msg = error_line(res)
    assert "unknown host key" in msg and fp in msg and "--accept-new-host-key" in msg, msg
    assert known_hosts.read_text() == ""
    assert sshd_server.log().count("Accepted ") == accepted_before
    assert port_is_free(port)

    # Trust on first use: works, and the key is saved as OpenSSH would write it.
    with companion([*start, "--accept-new-host-key"], env, tmp_path / "logs") as c:
        rec = start_companion(c)
        code, _ = api(rec["url"], "/api/colab/build-info")
        assert code == 200
    assert known_hosts.read_text() == sshd_server.known_hosts_line + "\n"
    # Now known: a plain command connects without the option.
    res = run_cli("status", "gpu-box", "--json", env=env)
    assert res.returncode == 0, res.stderr

    # A real-world known_hosts: hashed names (HashKnownHosts), a CA line, a broken line.
    kind, b64 = sshd_server.host_key.public_line.split()[:2]
    hashed = paramiko.HostKeys.hash_host(sshd_server.known_hosts_name)
    known_hosts.write_text(
        f"@cert-authority *.example.com {other.public_line}\n"
        "broken.example.com ssh-ed25519 not-base64!\n"
        f"{hashed} {kind} {b64}\n"
    )
    res = run_cli("status", "gpu-box", "--json", env=env)
    assert res.returncode == 0, res.stderr
    # A key marked @revoked is refused even when listed as known.
    known_hosts.write_text(f"@revoked * {kind} {b64}\n{sshd_server.known_hosts_line}\n")
    res = run_cli("status", "gpu-box", "--json", env=env)
    assert res.returncode == 3, res.stderr
    msg = error_line(res)
    assert "@revoked" in msg and fp in msg, msg


# ---------------------------------------------------------------------------------------------
# 5. authentication


def test_wrong_key_is_an_auth_error(tmp_path, sshd_server, user):
    """A client key the server does not accept: exit 4, one line naming the fix."""
    home, env = user
    stray = make_keypair(tmp_path / "stray" / "id_ed25519")
    for src, name in ((stray.path, "id_ed25519"), (stray.pub_path, "id_ed25519.pub")):
        (home / ".ssh" / name).write_bytes(src.read_bytes())
    port = free_port()
    res = run_cli("start", "gpu-box", "--port", str(port), env=env)
    assert res.returncode == 4, res.stderr
    msg = error_line(res)
    assert f"authentication to root@127.0.0.1:{sshd_server.port} failed" in msg, msg
    assert "id_ed25519" in msg and "authorized_keys" in msg, msg
    assert runtime_files(remote_runtime_dir(sshd_server)) == []
    assert port_is_free(port)


def protect_key(key: Path, phrase: str) -> None:
    """Give the private key a passphrase (ssh-keygen -p); its public half stays the same."""
    subprocess.run(
        ["ssh-keygen", "-q", "-p", "-N", phrase, "-f", str(key)],
        check=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )


def read_terminal(master: int, until: bytes, seen: bytearray, deadline: float = 60.0) -> None:
    """Read the pty's output into `seen` until it holds `until` (bounded)."""
    end = time.monotonic() + deadline
    while until not in seen:
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {until!r} on the terminal within {deadline} s: {seen!r}")
        ready, _, _ = select.select([master], [], [], min(left, 0.5))
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the program closed the terminal
                chunk = b""
            if not chunk:
                raise AssertionError(f"terminal closed before {until!r}: {seen!r}")
            seen += chunk


def test_passphrase_asked_on_the_terminal(tmp_path, sshd_server, user):
    """No SSH_ASKPASS, a real terminal (a pty as the controlling tty): the companion asks for
    the key's passphrase there, once, without echoing it, and goes on to print the URL."""
    home, env = user
    key = home / ".ssh" / "id_ed25519"
    protect_key(key, "tty phrase 1")
    master, slave = os.openpty()

    def own_terminal() -> None:  # a new session whose controlling terminal is the pty
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        cli_argv("start", "gpu-box", "--port", str(free_port()), "--json"),
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        preexec_fn=own_terminal,
    )
    os.close(slave)
    seen = bytearray()
    try:
        read_terminal(master, b"Passphrase for " + str(key).encode() + b": ", seen)
        os.write(master, b"tty phrase 1\n")
        read_terminal(master, b"Tunnel up", seen)
        record = json.loads(next(ln for ln in seen.decode().splitlines() if ln.startswith("{")))
        assert run_code(record["url"], start_kernel(record["url"]), "7 * 6") == ["42"]
        assert seen.count(b"Passphrase for") == 1 and b"tty phrase" not in seen
        assert b"Traceback" not in seen
    finally:
        stop_process(proc, signal.SIGINT)
        os.close(master)
    stop_env = askpass_env(tmp_path, env, "tty phrase 1", "stop")[0]
    assert run_cli("stop", "gpu-box", env=stop_env).returncode == 0
    assert wait_no_remote_leftovers(sshd_server) == []


def askpass_env(tmp: Path, env: dict[str, str], answer: str, tag: str) -> tuple[dict, Path]:
    """env with an SSH_ASKPASS program answering `answer`, and the file counting its calls."""
    counter = tmp / f"asked-{tag}"
    askpass = make_askpass(tmp / f"askpass-{tag}", answer, counter)
    return {**env, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"}, counter


def test_key_passphrase_asked_once(tmp_path, sshd_server, user):
    """A passphrase-protected ~/.ssh/id_ed25519 and no agent: the passphrase is asked once
    through SSH_ASKPASS; a wrong one is exit 4 naming the key, not a traceback."""
    home, env = user
    key = home / ".ssh" / "id_ed25519"
    protect_key(key, "s3cret phrase")
    key_env, counter = askpass_env(tmp_path, env, "s3cret phrase", "right")
    start = ["start", "gpu-box", "--port", str(free_port()), "--json"]
    with companion(start, key_env, tmp_path / "logs") as c:
        rec = start_companion(c)
        assert run_code(rec["url"], start_kernel(rec["url"]), "6 * 7") == ["42"]
        assert counter.read_text().splitlines() == ["asked"]
        assert c.stop(signal.SIGINT) == 0
        assert "Traceback" not in c.stderr() and "s3cret" not in c.stderr()

    key_env, counter = askpass_env(tmp_path, env, "not it", "wrong")
    res = run_cli("start", "gpu-box", "--port", str(free_port()), env=key_env)
    assert res.returncode == 4, res.stderr
    assert counter.read_text().splitlines() == ["asked"], "asked more than once"
    assert "Traceback" not in res.stderr and "not it" not in res.stderr
    assert f"cannot unlock {key}: wrong passphrase" in error_line(res), res.stderr
    res = run_cli("stop", "gpu-box", env=askpass_env(tmp_path, env, "s3cret phrase", "stop")[0])
    assert res.returncode == 0, res.stderr
    assert wait_no_remote_leftovers(sshd_server) == []


@pytest.mark.parametrize("use_pam", [False, True], ids=["password", "kbd-interactive"])
def test_password_through_askpass_asked_once(tmp_path, ssh_client_files, use_pam):
    """Password (or PAM keyboard-interactive) via SSH_ASKPASS, no terminal: asked exactly
    once per run; a wrong one -> exit 4.

    The password account cannot read /root, where this interpreter (and the package) live,
    so the run cannot go past the remote package check: authentication succeeding is shown
    by sshd's log and by the failure moving on to the package check (exit 7, not 4).
    """
    with (
        password_account() as account,
        run_sshd(tmp_path, password_user=account, use_pam=use_pam, name="pwsshd") as server,
    ):
        ssh_client_files.add_host("pw-box", server, user=account.name, authorize=False)
        home = ssh_client_files.make_home(tmp_path / "home")
        for password, expected_rc in ((account.password, 7), (account.password + "-wrong", 4)):
            counter = tmp_path / f"asked-{expected_rc}"
            askpass = make_askpass(tmp_path / f"askpass-{expected_rc}", password, counter)
            env = companion_env(
                home, tmp_path, SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force"
            )
            res = run_cli("start", "pw-box", "--port", str(free_port()), env=env)
            assert res.returncode == expected_rc, res.stderr
            msg = error_line(res)
            assert counter.read_text().splitlines() == ["asked"], "asked more than once"
            if expected_rc == 7:
                method = "keyboard-interactive/pam" if use_pam else "password"
                assert f"Accepted {method} for {account.name}" in server.log()
                assert "authentication" not in msg and "not installed" in msg, msg
            else:
                assert f"authentication to {account.name}@127.0.0.1:{server.port} failed" in msg
                assert ("keyboard-interactive" if use_pam else "password") in msg, msg
            assert account.password not in res.stderr + res.stdout


# ---------------------------------------------------------------------------------------------
# 6. remote interpreter


def test_remote_without_the_package(tmp_path, sshd_server, user):
    """A remote python lacking the package, or no python at all: exit 7 with the fix."""
    home, env = user
    venv = tmp_path / "bare-venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)],
        check=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    bare = venv / "bin" / "python"
    port = free_port()
    res = run_cli("start", "gpu-box", "--port", str(port), "--remote-python", str(bare), env=env)
    assert res.returncode == 7, res.stderr
    msg = error_line(res)
    assert "not installed" in msg and str(bare) in msg and "--install" in msg, msg

    res = run_cli(
        "start", "gpu-box", "--port", str(port), "--remote-python", "/nonexistent/python", env=env
    )
    assert res.returncode == 7, res.stderr
    msg = error_line(res)
    assert "/nonexistent/python not found on gpu-box" in msg and "--remote-python" in msg, msg

    assert runtime_files(remote_runtime_dir(sshd_server)) == []
    assert port_is_free(port)


def test_remote_uv_runs_the_agent_through_uv(tmp_path, sshd_server, user):
    """`--remote-uv`: the remote agent and runtime start through a real `uv run python` (uv
    outside a project picks the interpreter on the remote's PATH, which has the package)."""
    home, env = user
    port = free_port()
    with companion(
        ["start", "gpu-box", "--port", str(port), "--remote-uv", "--json"], env, tmp_path / "l"
    ) as c:
        rec = start_companion(c)
        # uv marks what it runs with $UV; the detached runtime inherited it from the agent.
        assert psutil.Process(rec["remote_pid"]).environ().get("UV", "").endswith("/uv")
        kid = start_kernel(rec["url"])
        assert run_code(rec["url"], kid, "21 * 2") == ["42"]
        res = run_cli("status", "gpu-box", "--remote-uv", env=env)
        assert res.returncode == 0 and str(rec["remote_pid"]) in res.stdout, res.stderr
        res = run_cli("stop", "gpu-box", "--remote-uv", env=env)
        assert res.returncode == 0, res.stderr
    assert wait_no_remote_leftovers(sshd_server) == []
    assert port_is_free(port)


# ---------------------------------------------------------------------------------------------
# 7. local port taken


def test_local_port_in_use(tmp_path, sshd_server, user):
    """A taken --port: exit 6 naming the port and the fix; nothing happens on the remote."""
    home, env = user
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        res = run_cli("start", "gpu-box", "--port", str(port), env=env)
    assert res.returncode == 6, res.stderr
    msg = error_line(res)
    assert f"local port {port} is already in use" in msg and "--port" in msg, msg
    assert f"pid {os.getpid()}" in msg, msg  # who holds it
    assert "Accepted " not in sshd_server.log()  # did not even connect
    assert runtime_files(remote_runtime_dir(sshd_server)) == []


# ---------------------------------------------------------------------------------------------
# 8. url, status, doctor


def test_url_status_and_doctor(tmp_path, sshd_server, user):
    """The human output, `url` again, `status` lists tunnel and runtime, `doctor` checks hops."""
    home, env = user
    port = free_port()
    res = run_cli("url", "gpu-box", env=env)
    assert res.returncode == 1
    assert "no connection to gpu-box yet; run: jupyter colabremote start gpu-box" in error_line(res)

    with companion(["start", "gpu-box", "--port", str(port)], env, tmp_path / "logs") as c:
        # Without --json: the Backend URL for Colab, and a line for VS Code.
        text = c.read_until(b"VS Code")
        urls = re.findall(r"http://localhost:\d+/\?token=[0-9a-f]+", text)
        assert len(set(urls)) == 1 and urls[0].startswith(f"http://localhost:{port}/"), text
        url = urls[0]
        assert "Connect to a local runtime" in text
        assert any("VS Code" in line and url in line for line in text.splitlines()), text
        remote_pid = int(re.search(r"remote pid (\d+)", c.read_until(b"remote pid"))[1])
        code, _ = api(url, "/api/colab/build-info")
        assert code == 200

        res = run_cli("url", "gpu-box", env=env)
        assert res.returncode == 0 and res.stdout.strip() == url

        res = run_cli("status", "gpu-box", "--json", env=env)
        assert res.returncode == 0, res.stderr
        status = json.loads(res.stdout)
        assert status["tunnels"] == [
            {"host": "gpu-box", "profile": "default", "local_port": port, "companion_running": True,
             "forwards": []}
        ]  # fmt: skip
        [rt] = status["runtimes"]
        assert rt["pid"] == remote_pid and rt.get("profile", "default") == "default"
        assert token_of(url) not in res.stdout

        res = run_cli("doctor", "gpu-box", env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "All checks passed" in res.stdout
        assert "[FAIL]" not in res.stdout and res.stdout.count("[ok  ]") == 8, res.stdout
        assert "Python kernel" in res.stdout and "ran 1+1" in res.stdout
        assert "Traceback" not in res.stderr

        assert c.stop() == 0

    res = run_cli("status", "gpu-box", "--json", env=env)
    assert json.loads(res.stdout)["tunnels"][0]["companion_running"] is False
    # The tunnel is closed: `url` does not print a URL that would not answer.
    res = run_cli("url", "gpu-box", env=env)
    assert res.returncode == 1 and res.stdout == ""
    assert "no tunnel to gpu-box is open" in error_line(res)
    res = run_cli("doctor", "gpu-box", env=env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "[FAIL] local forward" in res.stdout
    assert "Fix: jupyter colabremote start gpu-box" in res.stdout.splitlines()
    assert "Traceback" not in res.stderr


# ---------------------------------------------------------------------------------------------
# 9. secrets


def test_secrets_stay_off_command_lines_and_logs(tmp_path, sshd_server, user):
    """The token and --env-file values: never in a command line, a log, or stderr."""
    home, env = user
    secret = "s3cr3t-" + os.urandom(12).hex()
    env_file = tmp_path / "kernel.env"
    env_file.write_text(f"# for the kernels\nexport MY_SECRET='{secret}'\nOTHER=1\n")
    port = free_port()
    args = ["start", "gpu-box", "--port", str(port), "--json", "--env-file", str(env_file)]
    with companion(args, env, tmp_path / "logs") as c:
        rec = start_companion(c)
        token = token_of(rec)
        kid = start_kernel(rec["url"])
        out = run_code(rec["url"], kid, 'import os; os.environ["MY_SECRET"]', "os.getpid()")
        assert out[0] == repr(secret)
        kernel_pid = int(out[1])
        assert kernel_pid in {p.pid for p in family(rec["remote_pid"])}

        # Every process on this machine, i.e. both sides: companion, sshd, agent, runtime, kernel.
        leaks = {pid: cmd for pid, cmd in all_cmdlines().items() if token in cmd or secret in cmd}
        assert leaks == {}
        # Nor in any environment (readable in /proc by the same user): it travels on stdin.
        assert [pid for pid, e in all_environs().items() if token in e] == []
        assert token not in c.stderr() and secret not in c.stderr()

        log = remote_runtime_dir(sshd_server) / "colabremote-default.log"
        text = log.read_text(errors="replace")
        assert "Jupyter Server" in text or "http://" in text, text  # the log is real
        assert token not in text and secret not in text
        # The remote keeps only the token's hash, nowhere the token itself.
        for d in ("HOME", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR"):
            for f in Path(sshd_server.remote_env[d]).rglob("*"):
                if f.is_file() and f.stat().st_size < 1_000_000:
                    assert token.encode() not in f.read_bytes(), f
        assert c.stop() == 0
        assert token not in c.stderr()
