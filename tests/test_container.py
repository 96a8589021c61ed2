"""`start HOST --image IMAGE`: Colab's runtime image in a container on the host, supervised.

End to end with a real container engine: rootful podman (Debian 12) with runc, a private
configuration and storage under the test's temporary directory (tests/harness/container.py),
reached through a real sshd whose sessions get CONTAINERS_CONF / CONTAINERS_STORAGE_CONF.
No registry is reachable here, so the image is a local stand-in for Colab's, imported once
per session from this machine's Python (plain Jupyter on 8080 printing its URL with a token,
as Colab's image does). Podman publishes ports through slirp4netns (set in the private
containers.conf), so the tests add no bridge, address or iptables rule to the machine.

GPUs: no GPU exists here, so `--gpus all` is checked on the exact engine command line the
agent runs (and podman's refusal to resolve the CDI device is the clean error it must be);
passing a GPU through for real needs a machine with one.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from jupyter_colab_remote.agent import container
from tests.harness.companion import (
    api,
    cli_argv,
    companion,
    companion_env,
    error_line,
    run_cli,
    run_code,
    start_companion,
    start_kernel,
    token_of,
)
from tests.harness.container import PrivatePodman, build_rootfs_tar, podman_usable
from tests.harness.processes import SYSTEM_PATH, free_port, port_is_free, wait_gone
from tests.harness.runtime_api import wait_for
from tests.harness.ssh_client import SSHClientFiles
from tests.harness.sshd import run_sshd
from tests.test_port_forwards import listing, wait_listing

pytestmark = [pytest.mark.e2e, pytest.mark.container]

IMAGE = "localhost/colabremote-test/runtime:latest"
COLAB = "us-docker.pkg.dev/colab-images/public/runtime"
SILENT_IMAGE = "localhost/colabremote-test/silent:latest"
#: The stand-in image with docs/Dockerfile.colab's CMD: jupyter-colab-remote serving it.
EXTENSION_IMAGE = "localhost/colabremote-test/with-extension:latest"
#: A registry that refuses at once (nothing listens there): a pull that fails fast.
MISSING_IMAGE = "localhost:5999/colabremote-test/missing:latest"


# ---------------------------------------------------------------------------------------------
# unit tests: the command line, the GPU mapping, the log parsing (no engine needed)


def test_gpu_args_mapping():
    """`--gpus` as each engine spells it (the only place that maps it)."""
    assert container.gpu_args("docker", None) == []
    assert container.gpu_args("docker", "all") == ["--gpus", "all"]
    assert container.gpu_args("docker", "0,1") == ["--gpus", "device=0,1"]
    assert container.gpu_args("docker", "device=2") == ["--gpus", "device=2"]
    assert container.gpu_args("podman", "all") == ["--device", "nvidia.com/gpu=all"]
    assert container.gpu_args("podman", "0, 1") == [
        "--device", "nvidia.com/gpu=0", "--device", "nvidia.com/gpu=1",
    ]  # fmt: skip
    assert container.gpu_args("podman", "GPU-8f6a-11") == ["--device", "nvidia.com/gpu=GPU-8f6a-11"]
    for bad in ("", ",", "0;rm -rf /", "a b"):
        if bad:
            with pytest.raises(container.ContainerError):
                container.gpu_args("docker", bad)
    with pytest.raises(container.ContainerError):
        container.gpu_args("lxc", "all")


def test_run_argv_exact():
    """The whole `run` command line: detached, named, labelled, loopback-only, restarted."""
    argv = container.run_argv(
        "docker", COLAB, "gpu box", 41234, "all", ["HF_TOKEN"], "/home/me/work"
    )
    assert argv == [
        "docker", "run", "--detach",
        "--name", "colabremote-gpu-box",
        "--label", "io.github.jupyter-colab-remote.profile=gpu box",
        "--label", f"io.github.jupyter-colab-remote.image={COLAB}",
        "--label", "io.github.jupyter-colab-remote.gpus=all",
        "--publish", "127.0.0.1:41234:8080",
        "--restart", "on-failure",
        "--gpus", "all",
        "--env", "HF_TOKEN",  # by name: the value comes from the engine's environment
        "--volume", "/home/me/work:/content",
        "--", COLAB,  # `--`: an image string is never read as an option
    ]  # fmt: skip
    argv = container.run_argv("podman", IMAGE, "default", 9000, "all")
    assert argv[argv.index("--restart") + 2 :] == ["--device", "nvidia.com/gpu=all", "--", IMAGE]


@pytest.mark.parametrize("image", ["--privileged", "-v/:/host", "img name", "img\x1b[2J", ""])
def test_option_like_images_are_refused(image):
    """An image reference that an engine could read as an option is refused before any run."""
    with pytest.raises(container.ContainerError, match="invalid image reference"):
        container.check_image(image)
    assert "--gpus" not in container.run_argv("podman", IMAGE, "default", 9000)


def test_forward_ports_are_published_on_loopback(monkeypatch):
    """`--forward`'s remote ports: checked, published on 127.0.0.1 beside 8080, read back."""
    argv = container.run_argv("docker", COLAB, "default", 41234, publish={6006: 6006, 8501: 42001})
    assert argv[argv.index("--restart") - 1 : argv.index("--restart") + 6] == [
        "127.0.0.1:41234:8080",
        "--restart", "on-failure",
        "--publish", "127.0.0.1:6006:6006",
        "--publish", "127.0.0.1:42001:8501",
    ]  # fmt: skip
    assert container.publish_request({"publish": [6006, 8080, 6006, 1]}) == [6006, 1]
    assert container.publish_request({}) == []
    for bad in ([0], [65536], ["6006"], [True], [6006.0], "6006", list(range(1, 70))):
        with pytest.raises(container.ContainerError, match="publish"):
            container.publish_request({"publish": bad})
    info = {"HostConfig": {"PortBindings": {
        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "41234"}],
        "6006/tcp": [{"HostIp": "127.0.0.1", "HostPort": "46006"}],
        "7000/tcp": [{"HostIp": "0.0.0.0", "HostPort": "7000"}],  # not ours: never used
        "5353/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],
    }}}  # fmt: skip
    assert container.published_ports(info) == {6006: 46006}
    assert container.published_ports({}) == {}
    # The same port on the host when it is free there; another one when it is taken.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        busy = taken.getsockname()[1]
        free = free_port()
        chosen = container.host_ports([free, busy], taken=[])
        assert chosen[free] == free and chosen[busy] not in (busy, free)
        assert container.host_ports([free], taken=[free])[free] != free


COLAB_LOG = """\
[I 2024-05-01 10:00:00.000 NotebookApp] Serving notebooks from local directory: /content
[I 2024-05-01 10:00:00.001 NotebookApp] Jupyter Notebook 6.5.5 is running at:
[I 2024-05-01 10:00:00.001 NotebookApp] http://172.28.0.12:9000/?token=...
[I 2024-05-01 10:00:00.002 NotebookApp]  or http://127.0.0.1:9000/?token=0123456789abcdef0123456789abcdef0123456789abcdef
[W 2024-05-01 10:00:05.000 NotebookApp] 403 GET /api/kernels (172.17.0.1) 1.2ms referer=None
[I 2024-05-01 11:00:00.000 NotebookApp] http://127.0.0.1:9000/tree?a=1&token=fedcba9876543210fedcba9876543210
"""


def test_tokens_from_log_and_one_line_tail():
    """Tokens in printed URLs, newest last; `token=...` (hidden) skipped; tails blank them."""
    assert container.tokens_in(COLAB_LOG) == [
        "0123456789abcdef0123456789abcdef0123456789abcdef",
        "fedcba9876543210fedcba9876543210",
    ]
    assert container.tokens_in("http://127.0.0.1:8080/?token=...\ntoken=abc") == []
    tail = container.log_tail(COLAB_LOG, lines=3)
    assert "\n" not in tail and tail.count(" | ") == 2
    assert "fedcba98" not in tail and "[token]" in tail
    assert container.log_tail("") == "(empty log)"


def test_parse_time_and_names():
    """Engine timestamps (nanoseconds, Z or offset); container names engines accept."""
    assert container.parse_time("2026-11-22T03:09:56.987613508Z") == pytest.approx(
        1795316996.987613, abs=1e-3
    )
    assert container.parse_time("2026-11-22T04:09:56+01:00") == pytest.approx(1795316996)
    assert container.parse_time("0001-01-01T00:00:00Z") is not None
    assert container.parse_time("garbage") is None
    assert container.container_name("default") == "colabremote-default"
    assert container.container_name("a/b c") == "colabremote-a-b-c"


def test_detect_engine(tmp_path, monkeypatch):
    """The requested engine, else podman, else docker; docker first only with its daemon."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    with pytest.raises(container.ContainerError, match="no container engine"):
        container.detect_engine()
    for name in ("docker", "podman"):
        (bindir / name).write_text("#!/bin/sh\n")
        (bindir / name).chmod(0o755)
        if name == "docker":
            assert container.detect_engine() == "docker"
    has_socket = os.path.exists("/var/run/docker.sock")
    assert container.detect_engine() == ("docker" if has_socket else "podman")
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/user/1000/docker.sock")
    assert container.detect_engine() == "docker"
    assert container.detect_engine("podman") == "podman"
    with pytest.raises(container.ContainerError, match="unknown --engine"):
        container.detect_engine("lxc")
    (bindir / "podman").unlink()
    monkeypatch.delenv("DOCKER_HOST")
    with pytest.raises(container.ContainerError, match="podman is not on"):
        container.detect_engine("podman")


# ---------------------------------------------------------------------------------------------
# a real engine


def dockerfile_cmd() -> list[str]:
    """The CMD of docs/Dockerfile.colab (`jupyter colabremote serve ...`)."""
    text = (Path(__file__).parent.parent / "docs" / "Dockerfile.colab").read_text()
    cmd = text.split("\nCMD ", 1)[1].replace("\\\n", "")
    return json.loads(cmd.strip())


@pytest.fixture(scope="session")
def podman(tmp_path_factory):
    """A private podman with the stand-in image imported (built once per session)."""
    reason = podman_usable()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("podman")
    engine = PrivatePodman(root / "engine")
    res = engine.run("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False)
    if res.returncode != 0:
        pytest.skip(f"podman does not work here: {res.stderr.strip()[-300:]}")
    try:
        tarball = build_rootfs_tar(root / "rootfs.tar")
        engine.import_image(tarball, IMAGE)
        tarball.unlink()
        # An image that runs but never prints a URL (its own CMD; shares the layer).
        python = json.loads(tarball.with_suffix(".json").read_text())["python"]
        context = root / "context"
        context.mkdir()
        cmd = [python, "-c", "print('starting', flush=True); import time; time.sleep(600)"]
        (context / "Containerfile").write_text(f"FROM {IMAGE}\nCMD {json.dumps(cmd)}\n")
        engine.run("build", "--quiet", "-t", SILENT_IMAGE, str(context))
        cmd = [python, "-m", "jupyter_colab_remote", *dockerfile_cmd()[2:]]
        (context / "Containerfile").write_text(f"FROM {IMAGE}\nCMD {json.dumps(cmd)}\n")
        engine.run("build", "--quiet", "-t", EXTENSION_IMAGE, str(context))
        yield engine
    finally:
        engine.cleanup()


@pytest.fixture
def host(tmp_path, podman):
    """A remote host `gpu-box` (real sshd) whose sessions use the private podman; a user."""
    client = SSHClientFiles(tmp_path / "client")
    with run_sshd(tmp_path, name="sshd", set_env=podman.env) as server:
        client.add_host("gpu-box", server)
        home = client.make_home(tmp_path / "home")
        env = companion_env(home, tmp_path)
        try:
            yield server, env
        finally:
            client.close()
            # Containers a failed test left behind go before sshd (which kills their conmon).
            podman.run("rm", "--all", "--force", "--time", "0", check=False)


def inspect(podman: PrivatePodman, name: str) -> dict | None:
    res = podman.run("container", "inspect", name, check=False)
    return json.loads(res.stdout)[0] if res.returncode == 0 else None


def container_family(pid: int) -> list[psutil.Process]:
    """The container's main process and its descendants (the kernels), as host processes."""
    p = psutil.Process(pid)
    return [p, *p.children(recursive=True)]


def remote_leftovers(server) -> list[str]:
    """Processes started through the server's sessions (conmon, slirp4netns...), not sshd."""
    out = []
    for p in server.processes():
        try:
            if not p.name().startswith("sshd"):
                out.append(f"{p.pid} {p.name()}")
        except psutil.Error:
            continue
    return out


def answers(url: str) -> bool:
    """Whether Jupyter answers through the URL (False while the connection fails)."""
    try:
        return api(url, "/api/kernelspecs")[0] == 200
    except (OSError, http.client.HTTPException):
        return False


@pytest.mark.needs_root
def test_start_reattach_crash_status_doctor_stop(tmp_path, host, podman):
    """The life of a container runtime, as the user sees it, through a real SSH tunnel."""
    server, env = host
    port = free_port()
    start = ["start", "gpu-box", "--image", IMAGE, "--port", str(port), "--json"]
    name = "colabremote-default"

    with companion(start, env, tmp_path / "logs") as first:
        rec = start_companion(first)
        assert rec["mode"] == "container" and rec["container"] == name
        assert rec["image"] == IMAGE and rec["engine"] == "podman"
        assert rec["reattached"] is False and rec["local_port"] == port
        url = rec["url"]
        # The token is the container's own, the one it printed.
        logs = podman.run("logs", name).stdout
        assert container.tokens_in(logs)[-1] == token_of(url)
        # Stored like the native token: this machine only, 0600.
        state_file = Path(rec["state_file"])
        assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
        assert json.loads(state_file.read_text())["token"] == token_of(url)
        kid = start_kernel(url)
        assert run_code(url, kid, "1+1", "x = 'kept'; x") == ["2", "'kept'"]
        assert "Traceback" not in first.stderr()
        assert first.stop(signal.SIGINT) == 0

    info = inspect(podman, name)
    assert info["State"]["Running"]  # Ctrl-C closed the tunnel only
    assert info["HostConfig"]["PortBindings"] == {
        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(rec["remote_port"])}]
    }
    assert info["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"
    assert info["Config"]["Labels"][container.LABEL_PROFILE] == "default"

    with companion(start, env, tmp_path / "logs") as second:
        again = start_companion(second)
        assert again["url"] == url and again["reattached"] is True  # same token
        assert again["remote_pid"] == rec["remote_pid"]
        assert run_code(url, kid, "x") == ["'kept'"]  # same kernel

        # Crash: the container's main process dies; the engine starts it again (the
        # restart policy) and the same URL works through the still-running tunnel.
        os.kill(rec["remote_pid"], signal.SIGKILL)

        def restarted() -> bool:
            i = inspect(podman, name)
            return bool(i and i["RestartCount"] >= 1 and i["State"]["Running"])

        wait_for(restarted, 30, "the engine did not restart the container")
        wait_for(lambda: answers(url), 60, "no answer through the tunnel after the restart")
        kid2 = start_kernel(url)
        assert run_code(url, kid2, "1+1") == ["2"]
        restarted_pid = inspect(podman, name)["State"]["Pid"]
        family = container_family(restarted_pid)
        assert len(family) >= 2  # jupyter and its kernel

        res = run_cli("status", "gpu-box", env=env)
        assert res.returncode == 0, res.stderr
        assert f"container profile=default {name} (podman) image {IMAGE}" in res.stdout
        assert "1 restart(s), GPUs: none" in res.stdout
        res = run_cli("status", "gpu-box", "--json", env=env)
        [ct] = json.loads(res.stdout)["containers"]
        assert ct["image"] == IMAGE and ct["restarts"] == 1 and ct["uptime"] < 300
        assert ct["gpus"] is None and "token" not in ct

        res = run_cli("doctor", "gpu-box", env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        for line in ("container engine", "image", "published port", "token and Colab origin"):
            assert line in res.stdout
        assert f"127.0.0.1:{rec['remote_port']} -> 8080 answers" in res.stdout

        res = run_cli("stop", "gpu-box", env=env)
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith(f"removed the container {name} ({IMAGE}) on gpu-box")
        assert "tunnel closed" in res.stdout
        assert second.proc.poll() == 0
    # No orphans: no container, no container process, no conmon or slirp4netns.
    assert podman.containers() == []
    assert wait_gone(family) == []
    wait_for(lambda: not remote_leftovers(server), 15, f"left: {remote_leftovers(server)}")
    assert port_is_free(port)
    res = run_cli("stop", "gpu-box", env=env)
    assert res.returncode == 0 and res.stdout.startswith("no runtime was running on gpu-box")


@pytest.mark.needs_root
def test_missing_image_streams_the_pull_and_fails_in_one_line(tmp_path, host, podman):
    """A pull that fails: its output as progress lines, then one error line, exit code 8."""
    server, env = host
    port = free_port()
    res = run_cli("start", "gpu-box", "--image", MISSING_IMAGE, "--port", str(port), env=env)
    assert res.returncode == container.EXIT_CODE, res.stderr
    line = error_line(res)
    assert f"pulling {MISSING_IMAGE} with podman failed: Error: " in line, line
    assert "connection refused" in line
    # The engine's own pull output came first, as it happened.
    assert f"pulling {MISSING_IMAGE} with podman (it is not on the host yet)" in res.stderr
    assert f"Trying to pull {MISSING_IMAGE}" in res.stderr
    assert res.stdout == ""
    assert podman.containers() == []
    assert remote_leftovers(server) == []
    assert port_is_free(port)


@pytest.mark.needs_root
def test_gpus_reach_the_engine_command_line(tmp_path, podman):
    """`--gpus all` becomes podman's CDI device on the exact command line the agent runs.

    There is no GPU (nor CDI spec) here, so podman then refuses the device: a clean one-line
    error with the fix, and no container left. A real pass-through needs a GPU machine.
    """
    shim = tmp_path / "shim"
    shim.mkdir()
    calls = tmp_path / "podman-calls.jsonl"
    real = "/usr/bin/podman" if os.path.exists("/usr/bin/podman") else "podman"
    (shim / "podman").write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"os.execv({real!r}, ['podman', *sys.argv[1:]])\n"
    )
    (shim / "podman").chmod(0o755)
    path = f"{shim}:{Path(sys.executable).parent}:{SYSTEM_PATH}"
    client = SSHClientFiles(tmp_path / "client")
    with run_sshd(tmp_path, set_env={**podman.env, "PATH": path}) as server:
        client.add_host("gpu-box", server)
        env = companion_env(client.make_home(tmp_path / "home"), tmp_path)
        args = ["start", "gpu-box", "--image", IMAGE, "--gpus", "all", "--port", str(free_port())]
        res = run_cli(*args, env=env)
        client.close()
    assert res.returncode == container.EXIT_CODE, res.stderr
    line = error_line(res)
    assert "podman run" in line and "nvidia.com/gpu=all" in line, line
    assert "nvidia-ctk cdi generate" in line
    [run] = [json.loads(c) for c in calls.read_text().splitlines() if json.loads(c)[0] == "run"]
    port = int(run[run.index("--publish") + 1].split(":")[1])
    assert ["podman", *run] == container.run_argv("podman", IMAGE, "default", port, "all")
    assert run[run.index("--restart") + 2 : run.index("--restart") + 4] == [
        "--device", "nvidia.com/gpu=all",
    ]  # fmt: skip
    assert podman.containers() == []


def test_image_that_prints_no_url_is_a_clear_error(tmp_path, podman):
    """The agent's deadline: an image that never prints a token; the log tail, no container."""
    env = {**os.environ, **podman.env, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    request = {"profile": "silent", "image": SILENT_IMAGE, "engine": "podman", "ready_deadline": 3}
    res = subprocess.run(
        cli_argv("remote", "ensure"), input=json.dumps(request) + "\n", env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 1, res.stderr
    answer = json.loads(res.stdout)
    assert answer["ok"] is False and answer["exit_code"] == container.EXIT_CODE
    assert answer["error"] == (
        f"{SILENT_IMAGE} printed no Jupyter URL with a token within 3 s (container "
        "colabremote-silent, running); last log lines: starting"
    )
    assert podman.containers() == []


def test_start_without_host_publishes_the_container_on_the_port(tmp_path, podman):
    """No host: this machine runs the image, published on 127.0.0.1:--port itself."""
    (tmp_path / "home").mkdir()
    env = companion_env(tmp_path / "home", tmp_path, **podman.env)
    port = free_port()
    try:
        res = run_cli("start", "--image", IMAGE, "--port", str(port), "--json", env=env)
        assert res.returncode == 0, res.stderr
        rec = json.loads(res.stdout)
        assert rec["url"] == f"http://localhost:{port}/?token={token_of(rec)}"
        assert rec["mode"] == "container" and rec["reattached"] is False
        kid = start_kernel(rec["url"])
        assert run_code(rec["url"], kid, "1+1") == ["2"]
        res = run_cli("start", "--image", IMAGE, "--port", str(port), "--json", env=env)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["url"] == rec["url"]
        # Stopped behind our back (a host reboot): start runs the same container again.
        podman.run("stop", "--time", "0", "colabremote-default")
        res = run_cli("start", "--image", IMAGE, "--port", str(port), "--json", env=env)
        assert res.returncode == 0, res.stderr
        again = json.loads(res.stdout)
        assert again["url"] == rec["url"] and again["reattached"] is False
        assert "starting the stopped container colabremote-default again" in res.stderr
        res = run_cli("stop", env=env)
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith("removed the container colabremote-default")
        assert podman.containers() == []
        assert port_is_free(port)
    finally:
        podman.run("rm", "--all", "--force", "--time", "0", check=False)


@pytest.mark.needs_root
def test_image_with_the_extension_as_docs_dockerfile_builds_it(tmp_path, host, podman):
    """docs/Dockerfile.colab's CMD in a container: the extension's token, origin policy and
    Colab endpoints, bound to 0.0.0.0 inside the container, published on loopback only."""
    server, env = host
    assert dockerfile_cmd()[:3] == ["jupyter", "colabremote", "serve"]
    assert "--ColabRemoteApp.allow_remote_bind=True" in dockerfile_cmd()
    port = free_port()
    args = ["start", "gpu-box", "--image", EXTENSION_IMAGE, "--profile", "ext", "--json"]
    with companion([*args, "--port", str(port)], env, tmp_path / "logs") as c:
        rec = start_companion(c)
        url = rec["url"]
        assert rec["container"] == "colabremote-ext" and rec["mode"] == "container"
        code, body = api(url, "/api/colab/build-info")
        assert code == 200 and body.startswith(b")]}'")
        code, body = api(url, "/colabremote/api/status")
        assert code == 200 and json.loads(body)["kernels"] == []
        kid = start_kernel(url)
        assert run_code(url, kid, "1+1") == ["2"]
        info = inspect(podman, "colabremote-ext")
        assert info["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostIp"] == "127.0.0.1"
        res = run_cli("stop", "gpu-box", "--profile", "ext", env=env)
        assert res.returncode == 0, res.stderr
    assert podman.containers() == []


def serve_in_container(port: int, marker: str, bind: str = "0.0.0.0") -> str:
    """Kernel code: `python -m http.server PORT` in the container, over a directory that holds
    a file named `marker` (it exists only inside the container)."""
    return (
        "import os, subprocess, sys\n"
        f"os.makedirs('/tmp/site-{port}', exist_ok=True)\n"
        f"open('/tmp/site-{port}/{marker}', 'w').write('hi')\n"
        f"srv{port} = subprocess.Popen([sys.executable, '-m', 'http.server', '--bind', '{bind}',"
        f" '--directory', '/tmp/site-{port}', '{port}'],"
        " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        f"srv{port}.pid"
    )


@pytest.mark.needs_root
def test_forward_reaches_the_containers_port(tmp_path, host, podman):
    """`--image ... --forward LOCAL:REMOTE`: an app the container's kernel serves on REMOTE
    answers on the laptop's localhost:LOCAL, though REMOTE is taken on the host itself (the
    container's port is then published on another loopback port). A re-attached container
    created without a port says so in one line."""
    server, env = host
    port, local, remote = free_port(), free_port(), free_port()
    name = "colabremote-default"
    start = ["start", "gpu-box", "--image", IMAGE, "--port", str(port), "--json"]
    with socket.socket() as squatter:  # the host's own REMOTE: something else listens there
        squatter.bind(("127.0.0.1", remote))
        squatter.listen()
        with companion([*start, "--forward", f"{local}:{remote}"], env, tmp_path / "logs") as c:
            rec = start_companion(c)
            [published] = rec["published"]
            assert published["port"] == remote and published["host_port"] != remote
            [fwd] = rec["forwards"]
            assert (fwd["local_port"], fwd["remote_port"]) == (local, remote)
            assert fwd["host_port"] == published["host_port"]
            bindings = inspect(podman, name)["HostConfig"]["PortBindings"]
            assert bindings[f"{remote}/tcp"] == [
                {"HostIp": "127.0.0.1", "HostPort": str(published["host_port"])}
            ]
            saved = json.loads(Path(rec["state_file"]).read_text())
            assert saved["published"] == rec["published"]
            url = rec["url"]
            kid = start_kernel(url)
            run_code(url, kid, serve_in_container(remote, "in-the-container.txt"))
            took = wait_listing(local, "in-the-container.txt", 30)
            print(f"\ncontainer's app served on localhost:{local} {took:.2f} s after its start")
            res = run_cli("status", "gpu-box", env=env)
            assert res.returncode == 0, res.stderr
            host_port = published["host_port"]
            assert f"GPUs: none, {remote} on 127.0.0.1:{host_port}\n" in res.stdout
            assert (
                f"forward http://localhost:{local} -> port {remote} in the container "
                f"(host port {host_port}) (--forward)"
            ) in res.stdout
            assert c.stop(signal.SIGINT) == 0

        # Re-attached with one more port: the container cannot publish it any more.
        local2, remote2 = free_port(), free_port()
        args = [*start, "--forward", f"{local}:{remote}", "--forward", f"{local2}:{remote2}"]
        with companion(args, env, tmp_path / "logs") as c:
            again = start_companion(c)
            assert again["reattached"] is True and again["published"] == rec["published"]
            line = (
                f"the container {name} does not publish port {remote2} (ports are published "
                "only when it is created; `stop` then `start` recreates it): "
                f"--forward reaches the host's own port {remote2} instead"
            )
            assert c.stderr().count(line) == 1, c.stderr()
            assert "in-the-container.txt" in (listing(local) or "")  # the first still works
            res = run_cli("stop", "gpu-box", env=env)
            assert res.returncode == 0, res.stderr
    assert podman.containers() == []
    assert port_is_free(local) and port_is_free(local2)
