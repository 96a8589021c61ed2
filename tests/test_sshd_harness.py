"""Self-tests of the real-sshd harness in tests/harness/sshd.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import paramiko
import psutil
import pytest

from tests.harness import ROOT
from tests.harness.accounts import password_account
from tests.harness.netns import cleanup_stale_netns, remote_host_netns
from tests.harness.processes import net_connections, tcp_connect
from tests.harness.ssh_client import SSH, SSHClientFiles
from tests.harness.sshd import MARKER_VAR, run_sshd

pytestmark = [pytest.mark.e2e, pytest.mark.needs_root]


def run(client: paramiko.SSHClient, command: str, timeout: float = 10.0) -> str:
    """Run a remote command; its stdout (asserting exit status 0)."""
    _, out, err = client.exec_command(command, timeout=timeout)
    text = out.read().decode()
    status = out.channel.recv_exit_status()
    assert status == 0, (command, status, err.read().decode())
    return text


def harness_sshd_pids(server) -> list[int]:
    """Live processes whose command line names the server's config, or with its marker."""
    pids = []
    for p in psutil.process_iter():
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            if str(server.config_path) in p.cmdline():
                pids.append(p.pid)
            elif p.environ().get(MARKER_VAR) == server.marker:
                pids.append(p.pid)
        except psutil.Error:
            continue
    return pids


def test_key_auth_through_known_hosts(sshd_server, ssh_client_files):
    """Key auth with RejectPolicy against the generated known_hosts; the remote environment."""
    server = sshd_server
    line = server.known_hosts_line
    assert line.startswith(f"[127.0.0.1]:{server.port} ssh-ed25519 AAAA")
    assert server.host_pkey.get_name() == "ssh-ed25519"
    assert ssh_client_files.known_hosts.read_text() == line + "\n"
    assert server.log_path.exists() and psutil.pid_exists(server.pid)

    client = server.connect(ssh_client_files.key, known_hosts=ssh_client_files.known_hosts)
    assert client.get_transport().get_remote_server_key() == server.host_pkey
    assert run(client, "echo ok") == "ok\n"
    # SetEnv: this interpreter, jupyter and isolated dirs on the "remote".
    out = run(
        client,
        'python3 -c "import sys; print(sys.prefix)"; command -v jupyter; '
        'echo "$HOME|$JUPYTER_DATA_DIR|$JUPYTER_RUNTIME_DIR|$JUPYTER_CONFIG_DIR"',
    ).splitlines()
    env = server.remote_env
    assert out[0] == sys.prefix
    assert os.path.dirname(out[1]) == os.path.dirname(sys.executable)
    assert out[2] == "|".join(
        env[k] for k in ("HOME", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR")
    )

    # Unknown host key: refused.
    empty = ssh_client_files.dir / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        server.connect(ssh_client_files.key, known_hosts=empty)
    # A different key recorded for this host:port: refused.
    other = SSHClientFiles(ssh_client_files.dir / "other").key
    wrong = ssh_client_files.dir / "wrong_known_hosts"
    wrong.write_text(f"{server.known_hosts_name} {other.public_line}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        server.connect(ssh_client_files.key, known_hosts=wrong)
    # A key not authorized: refused.
    with pytest.raises(paramiko.AuthenticationException):
        server.connect(other)


def test_ssh_config_alias_and_fake_home(tmp_path, sshd_server, ssh_client_files, monkeypatch):
    """paramiko.SSHConfig resolves the alias; a fake HOME's ~/.ssh works with defaults."""
    cfg = ssh_client_files.paramiko_config().lookup("gpu-box")
    assert cfg["hostname"] == "127.0.0.1"
    assert int(cfg["port"]) == sshd_server.port
    assert cfg["user"] == "root"
    assert cfg["identityfile"] == [str(ssh_client_files.key.path)]
    assert cfg["userknownhostsfile"] == str(ssh_client_files.known_hosts)
    assert run(ssh_client_files.connect("gpu-box"), "echo $USER") == "root\n"

    home = ssh_client_files.make_home(tmp_path / "fakehome")
    monkeypatch.setenv("HOME", str(home))
    cfg = paramiko.SSHConfig.from_path(os.path.expanduser("~/.ssh/config")).lookup("gpu-box")
    assert "identityfile" not in cfg and int(cfg["port"]) == sshd_server.port
    client = paramiko.SSHClient()
    client.load_host_keys(os.path.expanduser("~/.ssh/known_hosts"))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            cfg["hostname"],
            int(cfg["port"]),
            username=cfg["user"],
            key_filename=os.path.expanduser("~/.ssh/id_ed25519"),
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
        assert run(client, "echo ok") == "ok\n"
    finally:
        client.close()


@pytest.mark.parametrize("use_pam", [False, True], ids=["password", "pam-kbd-interactive"])
def test_password_auth(tmp_path, use_pam):
    """Password auth (UsePAM no, /etc/shadow) and keyboard-interactive (UsePAM yes)."""
    with password_account() as user, run_sshd(tmp_path, password_user=user, use_pam=use_pam) as s:
        client = s.connect(user=user.name, password=user.password)
        assert run(client, "id -un") == f"{user.name}\n"
        if not use_pam:  # (PAM delays a failed attempt by ~2 s)
            with pytest.raises(paramiko.AuthenticationException):
                s.connect(user=user.name, password=user.password + "x")

        transport = paramiko.Transport(tcp_connect(s.host, s.port))
        try:
            transport.start_client(timeout=10)
            transport.get_security_options()
            prompts_seen = []

            def handler(title, instructions, prompts):
                prompts_seen.append(prompts)
                return [user.password for _ in prompts]

            if use_pam:
                transport.auth_interactive(user.name, handler)
                assert transport.is_authenticated()
                assert prompts_seen[0][0][0].startswith("Password")
            else:
                with pytest.raises(paramiko.SSHException):
                    transport.auth_interactive(user.name, handler)
        finally:
            transport.close()
    # The password is locked again afterwards.
    shadow = subprocess.run(["getent", "shadow", user.name], capture_output=True, text=True)
    assert shadow.stdout.split(":")[1].startswith("!")


def test_proxyjump_chain(tmp_path, ssh_client_files):
    """A bastion sshd forwards to the target: OpenSSH `ssh -J` and paramiko direct-tcpip."""
    with run_sshd(tmp_path, name="bastion") as bastion, run_sshd(tmp_path, name="target") as tgt:
        ssh_client_files.add_host("bastion", bastion)
        ssh_client_files.add_host("target", tgt)
        ssh_client_files.add_host("target-via", tgt, proxy_jump="bastion", authorize=False)
        before = tgt.log().count("Accepted publickey")
        if os.access(SSH, os.X_OK):
            res = subprocess.run(
                ssh_client_files.ssh_argv("-J", "bastion", "target", "echo", "jumped"),
                capture_output=True,
                text=True,
                timeout=20,
                stdin=subprocess.DEVNULL,
            )
            assert res.returncode == 0, res.stderr
            assert res.stdout == "jumped\n"
        client = ssh_client_files.connect("target-via")
        # The target's peer is a socket owned by a bastion sshd process: the hop is real.
        peer_port = int(run(client, "echo $SSH_CONNECTION").split()[1])
        owners = {
            p.pid
            for p in bastion.processes()
            for c in net_connections(p, "tcp4")
            if c.laddr.port == peer_port
        }
        assert owners, (peer_port, bastion.log())
        ssh_client_files.close()
        assert tgt.log().count("Accepted publickey") == before + 1 + os.access(SSH, os.X_OK)


def test_netns_cut_and_restore(tmp_path, ssh_client_files):
    """sshd in a namespace: works, a cut link makes connects time out, restored link works."""
    with remote_host_netns() as ns, run_sshd(tmp_path, netns=ns) as server:
        assert server.host == ns.addr and server.port == 22
        assert server.known_hosts_line.startswith(f"{ns.addr} ssh-ed25519 ")
        ssh_client_files.add_host("remote", server)
        client = server.connect(ssh_client_files.key, known_hosts=ssh_client_files.known_hosts)
        assert run(client, "echo ok") == "ok\n"
        # The remote really is in the namespace: it sees only lo and its veth end.
        assert ns.addr in run(client, "ip -o -4 addr show")

        # An established transport with TCP_USER_TIMEOUT notices the cut within seconds.
        sock = tcp_connect(server.host, server.port, user_timeout_ms=1500)
        watched = server.connect(ssh_client_files.key, sock=sock)
        watched.get_transport().set_keepalive(1)

        ns.link_down()
        t0 = time.monotonic()
        with pytest.raises((socket.timeout, TimeoutError)):
            socket.create_connection((server.host, server.port), timeout=1.0).close()
        assert time.monotonic() - t0 < 3
        end = time.monotonic() + 10
        while watched.get_transport().is_active() and time.monotonic() < end:
            time.sleep(0.1)
        assert not watched.get_transport().is_active()
        detected = time.monotonic() - t0

        ns.link_up()
        client2 = server.connect(ssh_client_files.key, known_hosts=ssh_client_files.known_hosts)
        assert run(client2, "echo again") == "again\n"
        print(f"dead link detected after {detected:.1f} s")


def test_teardown_leaves_nothing(tmp_path, ssh_client_files):
    """After the contexts exit: no sshd, session or detached remote process, no namespace."""
    with remote_host_netns() as ns:
        with run_sshd(tmp_path, netns=ns) as in_ns, run_sshd(tmp_path) as local:
            servers = [in_ns, local]
            for s in servers:
                ssh_client_files.add_host(f"h{s.port}-{s.host}", s)
                c = s.connect(ssh_client_files.key)
                # A session left open, and a daemonised process that escapes the session.
                c.exec_command("sleep 300")
                run(c, "setsid nohup sleep 301 >/dev/null 2>&1 < /dev/null & echo started")
            end = time.monotonic() + 5
            while time.monotonic() < end and not all(
                any("sleep" in p.name() for p in s.processes()) for s in servers
            ):
                time.sleep(0.05)
            for s in servers:
                names = [p.name() for p in s.processes()]
                assert names.count("sleep") == 2, names
                assert len(harness_sshd_pids(s)) >= 3
        # Clients were not closed by the test: teardown must cope.
        for s in servers:
            assert harness_sshd_pids(s) == []
            assert s.proc.poll() is not None
        assert ns.exists()
    assert not ns.exists()
    assert not os.path.exists(ns.path)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert ns.host_dev not in links and ns.deadend_dev not in links
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    assert ns.host_dev not in routes and ns.deadend_dev not in routes


CRASHING_RUN = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tests.harness.netns import remote_host_netns
from tests.harness.sshd import run_sshd
with remote_host_netns() as ns, run_sshd(Path(sys.argv[2]), netns=ns) as server:
    print(ns.name, ns.host_dev, ns.deadend_dev, server.pid, flush=True)
    time.sleep(60)
"""


def test_stale_namespace_of_crashed_run_is_removed(tmp_path):
    """A run killed without teardown leaves a namespace + sshd; the next run removes both."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING_RUN, str(ROOT), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        name, host_dev, deadend_dev, sshd_pid = proc.stdout.readline().split()
    finally:
        proc.kill()
        proc.wait(10)
    sshd_proc = psutil.Process(int(sshd_pid))
    assert sshd_proc.is_running()
    assert name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout

    cleanup_stale_netns()  # (a parallel run may have cleaned up first: check the state)
    sshd_proc.wait(5)
    assert (
        name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    )
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert host_dev not in links and deadend_dev not in links
