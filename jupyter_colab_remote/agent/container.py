"""Colab's runtime container image on the remote host, run and supervised by docker or podman.

`start HOST --image IMAGE` asks the agent (agent/main.py) to run the image instead of
`jupyter colabremote serve`: detached, named `colabremote-<profile>`, labelled with the
profile, `--restart on-failure`, its port 8080 published on 127.0.0.1 only (the companion's
SSH forward reaches it; nothing else on the network can), GPUs passed through on request.

Colab's image is a plain Jupyter behind Colab's own proxy, not this extension: it makes its
own token and prints it in a URL in its log (`http://127.0.0.1:9000/?token=...`; the
host and port in that line are the container's, only the token counts). The agent reads the
newest token from the engine's log, checks it against the published port, and hands it to
the companion, which keeps it in its 0600 state file as it does the native token.
Re-running `start` re-attaches to the running container (same token, same kernels); a
container that stopped is started again (its filesystem, and what was installed, kept).

`start --forward [LOCAL:]REMOTE` in container mode: the companion sends the REMOTE ports in
the request's `publish`; a new container gets each published on the host's loopback too
(`-p 127.0.0.1:HOSTPORT:REMOTE`, HOSTPORT = REMOTE when that is free on the host, else any
free port), and `published` in every answer maps them, read back from the engine's own
record of the container (its port bindings), so a re-attach or `status` knows them too.
Ports are published only when a container is created: the companion says so for a
requested port that a re-attached container lacks.

Every engine command has a deadline; failures are one-line `ContainerError`s.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import typing as t

from ..protocol.errors import ColabRemoteError, ExitCode
from ..protocol.messages import PROGRESS_PREFIX
from .server_paths import server_path

ENGINES = ("podman", "docker")
NAME_PREFIX = "colabremote-"
LABEL_PREFIX = "io.github.jupyter-colab-remote."
LABEL_PROFILE = LABEL_PREFIX + "profile"
LABEL_IMAGE = LABEL_PREFIX + "image"
LABEL_GPUS = LABEL_PREFIX + "gpus"
#: The port Colab's image serves on inside the container.
CONTAINER_PORT = 8080
#: Where `--workdir` is mounted: Colab's own working directory.
CONTAINER_WORKDIR = "/content"
#: How long a container may take to print its URL and answer (Colab's image: ~10-30 s).
READY_DEADLINE = 180.0
PULL_DEADLINE = 3600.0
ENGINE_TIMEOUT = 60.0
STOP_GRACE = 10
LOG_TAIL_LINES = 5
#: At most this many --forward ports are published per container.
MAX_PUBLISH = 64
#: Exit code of the companion when the engine or the image fails.
EXIT_CODE = ExitCode.CONTAINER

#: A URL with a token, as Jupyter prints it (`?token=...` with literal dots is a hidden one).
TOKEN_URL = re.compile(r"https?://[^\s/?#]+[^\s?#]*\?(?:[^\s#]*&)?token=([A-Za-z0-9_\-]{16,})")


class ContainerError(ColabRemoteError):
    """A failure of the engine, the image or the container, in one line."""

    exit_code = ExitCode.CONTAINER


# ---------------------------------------------------------------------------------------------
# pure helpers (unit-tested)


def gpu_args(engine: str, gpus: str | None) -> list[str]:
    """The engine's options that pass GPUs through: the one place that maps `--gpus`.

    `gpus` is `all` or a comma-separated list of device indexes or UUIDs (`0,1`, also
    accepted as docker's `device=0,1`). docker: `--gpus all` / `--gpus device=0,1` (the
    NVIDIA container toolkit's hook; a bare number would mean a GPU *count* to docker, so
    lists are always spelled `device=`). podman: CDI devices, `--device nvidia.com/gpu=all`
    / one `--device nvidia.com/gpu=N` per GPU (needs `nvidia-ctk cdi generate`).
    """
    if not gpus:
        return []
    spec = gpus.strip().removeprefix("device=").strip("\"'")
    ids = [g.strip() for g in spec.split(",") if g.strip()]
    if not ids or any(not re.fullmatch(r"[A-Za-z0-9_.:-]+", g) for g in ids):
        raise ContainerError(f"invalid --gpus {gpus!r}: expected 'all' or indexes like '0,1'")
    if engine == "docker":
        return ["--gpus", "all" if ids == ["all"] else "device=" + ",".join(ids)]
    if engine == "podman":
        return [a for g in ids for a in ("--device", f"nvidia.com/gpu={g}")]
    raise ContainerError(f"unknown container engine {engine!r}")


def container_name(profile: str) -> str:
    """`colabremote-<profile>`, with characters engines refuse in names replaced."""
    return NAME_PREFIX + (re.sub(r"[^A-Za-z0-9_.-]", "-", profile) or "default")


def run_argv(
    engine: str,
    image: str,
    profile: str,
    host_port: int,
    gpus: str | None = None,
    env_names: t.Iterable[str] = (),
    workdir: str | None = None,
    publish: t.Mapping[int, int] | None = None,
) -> list[str]:
    """The `ENGINE run` command line that starts the profile's container (no secrets in it:
    environment variables are passed by name, their values come from the engine's
    environment). `publish` maps more container ports to host ports, on loopback too."""
    argv = [
        engine, "run", "--detach",
        "--name", container_name(profile),
        "--label", f"{LABEL_PROFILE}={profile}",
        "--label", f"{LABEL_IMAGE}={image}",
        "--label", f"{LABEL_GPUS}={gpus or ''}",
        "--publish", f"127.0.0.1:{host_port}:{CONTAINER_PORT}",
        "--restart", "on-failure",
    ]  # fmt: skip
    for inside, outside in (publish or {}).items():
        argv += ["--publish", f"127.0.0.1:{outside}:{inside}"]
    argv += gpu_args(engine, gpus)
    for name in env_names:
        argv += ["--env", name]
    if workdir:
        argv += ["--volume", f"{workdir}:{CONTAINER_WORKDIR}"]
    return [*argv, "--", image]


def remove_argv(engine: str, ref: str) -> list[str]:
    """Remove a container at once (podman's `rm --force` would first wait its stop timeout)."""
    return [engine, "rm", "--force", *(["--time", "0"] if engine == "podman" else []), ref]


def tokens_in(log: str) -> list[str]:
    """Every token printed in a URL in the log, oldest first (hidden `token=...` skipped)."""
    return TOKEN_URL.findall(log)


def log_tail(log: str, secrets: t.Iterable[str] = (), lines: int = LOG_TAIL_LINES) -> str:
    """The last non-empty log lines on one line (`a | b | c`), tokens blanked."""
    tail = [line.strip()[:200] for line in log.splitlines() if line.strip()][-lines:]
    text = " | ".join(tail) or "(empty log)"
    for token in [*secrets, *tokens_in(text)]:
        if token:
            text = text.replace(token, "[token]")
    return text


def parse_time(stamp: str) -> float | None:
    """An engine's RFC 3339 timestamp (nanoseconds, `Z` or an offset) as epoch seconds."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?", stamp or "")
    if not m:
        return None
    frac = (m[2] or ".0")[:7]
    tz = "+00:00" if m[3] in (None, "Z") else m[3]
    with contextlib.suppress(ValueError):
        return dt.datetime.fromisoformat(m[1] + frac + tz).timestamp()
    return None


def published_port(info: dict[str, t.Any]) -> tuple[str, int] | None:
    """(host address, host port) the container's 8080 is published on."""
    bindings = ((info.get("HostConfig") or {}).get("PortBindings") or {}).get(
        f"{CONTAINER_PORT}/tcp"
    ) or []
    for b in bindings:
        with contextlib.suppress(TypeError, ValueError):
            return b.get("HostIp") or "0.0.0.0", int(b["HostPort"])
    return None


def publish_request(request: dict[str, t.Any]) -> list[int]:
    """The request's container ports to publish (`--forward`'s remote ports), checked."""
    ports = request.get("publish") or []
    if not isinstance(ports, list) or len(ports) > MAX_PUBLISH:
        raise ContainerError(f"publish: expected a list of at most {MAX_PUBLISH} ports")
    out: list[int] = []
    for p in ports:
        if type(p) is not int or not 0 < p < 65536:
            raise ContainerError(f"invalid port to publish {p!r}: expected 1-65535")
        if p != CONTAINER_PORT and p not in out:  # 8080 is Jupyter's, published already
            out.append(p)
    return out


def published_ports(info: dict[str, t.Any]) -> dict[int, int]:
    """{container port: host port} of the container's other TCP ports published on loopback
    (its own 8080 aside; a binding on another address is never used)."""
    out: dict[int, int] = {}
    for key, bindings in ((info.get("HostConfig") or {}).get("PortBindings") or {}).items():
        inside, _, proto = str(key).partition("/")
        if proto not in ("", "tcp") or inside == str(CONTAINER_PORT):
            continue
        for b in bindings or []:
            with contextlib.suppress(TypeError, ValueError, KeyError):
                if (b.get("HostIp") or "0.0.0.0") in ("127.0.0.1", "localhost"):
                    out[int(inside)] = int(b["HostPort"])
                    break
    return dict(sorted(out.items()))


# ---------------------------------------------------------------------------------------------
# the engine


def progress(line: str) -> None:
    """Report a progress line to the companion (stderr, prefixed; shown as it comes)."""
    print(PROGRESS_PREFIX + line, file=sys.stderr, flush=True)


def available_engines() -> list[str]:
    """The engines on PATH."""
    return [e for e in ENGINES if shutil.which(e)]


def detect_engine(requested: str | None = None) -> str:
    """The engine to use: the requested one, else podman or docker, whichever is on PATH.

    With both, docker wins only if its daemon socket is there (DOCKER_HOST or
    /var/run/docker.sock): a docker CLI without a daemon is common next to podman.
    """
    if requested:
        if requested not in ENGINES:
            raise ContainerError(f"unknown --engine {requested!r}: use docker or podman")
        if not shutil.which(requested):
            raise ContainerError(f"{requested} is not on the remote host's PATH")
        return requested
    found = available_engines()
    if not found:
        raise ContainerError(
            "no container engine on the remote host: install podman or docker "
            "(or leave out --image to run the native runtime)"
        )
    if len(found) > 1 and (os.environ.get("DOCKER_HOST") or os.path.exists("/var/run/docker.sock")):
        return "docker"
    return found[0]


def engine_run(
    argv: list[str], timeout: float = ENGINE_TIMEOUT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run an engine command (bounded), stdout and stderr captured."""
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
    except subprocess.TimeoutExpired as e:
        raise ContainerError(f"`{' '.join(argv[:3])}` timed out after {timeout:.0f} s") from e
    except FileNotFoundError as e:
        raise ContainerError(f"{argv[0]} is not on the remote host's PATH") from e


def _last_error(res: subprocess.CompletedProcess[str]) -> str:
    lines = [ln.strip() for ln in (res.stderr + "\n" + res.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.lower().startswith("error")]
    return (errors or lines or [f"exit code {res.returncode}"])[-1][:400]


def inspect(engine: str, name: str) -> dict[str, t.Any] | None:
    """`ENGINE inspect NAME` (a container), or None if there is none."""
    res = engine_run([engine, "container", "inspect", name])
    if res.returncode != 0:
        return None
    with contextlib.suppress(ValueError, IndexError):
        info = json.loads(res.stdout)[0]
        return info if isinstance(info, dict) else None
    return None


def check_image(image: str) -> str:
    """An image reference the engine can only take as an image (never as an option)."""
    if not image or image.startswith("-") or any(c.isspace() or not c.isprintable() for c in image):
        raise ContainerError(f"invalid image reference {image!r}")
    return image


def image_present(engine: str, image: str) -> bool:
    """Whether the image is in the engine's local store."""
    return engine_run([engine, "image", "inspect", "--", image]).returncode == 0


def pull(engine: str, image: str, report: t.Callable[[str], None] = progress) -> None:
    """Pull the image, reporting the engine's output line by line; one-line error on failure."""
    report(f"pulling {image} with {engine} (it is not on the host yet)")
    try:
        proc = subprocess.Popen(
            [engine, "pull", "--", image], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, errors="replace",
        )  # fmt: skip
    except FileNotFoundError as e:
        raise ContainerError(f"{engine} is not on the remote host's PATH") from e
    assert proc.stdout is not None
    deadline = time.monotonic() + PULL_DEADLINE
    lines: list[str] = []
    try:
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                lines.append(line)
                del lines[:-50]
                report(f"  {line[:300]}")
            if time.monotonic() > deadline:
                raise ContainerError(f"pulling {image} took longer than {PULL_DEADLINE:.0f} s")
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    if rc != 0:
        errors = [ln for ln in lines if ln.lstrip().lower().startswith("error")] or lines
        detail = errors[-1].strip() if errors else f"exit code {rc}"
        raise ContainerError(f"pulling {image} with {engine} failed: {detail[:400]}")


def container_logs(engine: str, name: str) -> str:
    """Everything the container printed (stdout and stderr), across its restarts."""
    try:
        res = subprocess.run(
            [engine, "logs", name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace", timeout=ENGINE_TIMEOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return ""
    return res.stdout


def free_port(wanted: int = 0) -> int:
    """A free TCP port on the host's loopback, to publish the container on: `wanted` if it
    is free, else any."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", wanted))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def host_ports(ports: list[int], taken: t.Iterable[int]) -> dict[int, int]:
    """{container port: host port} for a new container: the same port where it is free on
    the host's loopback, else a free one (never one of `taken` or chosen twice)."""
    used, out = set(taken), {}
    for port in ports:
        chosen = free_port(port)
        for _ in range(20):  # the kernel hands out another ephemeral port each time
            if chosen not in used:
                break
            chosen = free_port()
        else:
            raise ContainerError(f"no free port on the host's loopback to publish {port} on")
        used.add(chosen)
        out[port] = chosen
    return out


def probe(port: int, token: str, timeout: float = 5.0) -> tuple[bool, str]:
    """(True, "") if Jupyter answers /api/kernelspecs with this token on 127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/api/kernelspecs", headers={"Authorization": f"token {token}"})
        resp = conn.getresponse()
        body = resp.read()
    except (OSError, http.client.HTTPException) as e:
        return False, f"no answer on 127.0.0.1:{port} ({e.__class__.__name__}: {e})"
    finally:
        conn.close()
    if resp.status != 200:
        return False, f"/api/kernelspecs answered HTTP {resp.status}"
    try:
        specs = json.loads(body)["kernelspecs"]
    except (ValueError, KeyError, TypeError):
        return False, "/api/kernelspecs answered something other than Jupyter's JSON"
    return True, f"{len(specs)} kernelspec(s)"


def wait_ready(
    engine: str, name: str, port: int, image: str, deadline: float = READY_DEADLINE
) -> tuple[str, dict[str, t.Any]]:
    """Wait until the container has printed a token that works on the published port.

    The newest token printed is tried (after a restart, the image may print a new one).
    Returns (token, inspect). Raises with the last log lines if that does not happen.
    """
    end = time.monotonic() + deadline
    why = ""
    while True:
        info = inspect(engine, name)
        if info is None:
            raise ContainerError(f"container {name} disappeared while starting")
        logs = container_logs(engine, name)
        tokens = tokens_in(logs)
        if tokens:
            ok, why = probe(port, tokens[-1])
            if ok:
                return tokens[-1], info
        state = info.get("State") or {}
        if state.get("Status") in ("exited", "dead") and state.get("ExitCode") == 0:
            raise ContainerError(
                f"{image} exited (code 0) instead of serving; last log lines: "
                f"{log_tail(logs, tokens)}"
            )
        if time.monotonic() > end:
            if not tokens:
                raise ContainerError(
                    f"{image} printed no Jupyter URL with a token within {deadline:.0f} s "
                    f"(container {name}, {state.get('Status', '?')}); last log lines: "
                    f"{log_tail(logs)}"
                )
            raise ContainerError(
                f"the Jupyter server in {name} did not answer within {deadline:.0f} s: {why}; "
                f"last log lines: {log_tail(logs, tokens)}"
            )
        time.sleep(0.25)


def describe(engine: str, info: dict[str, t.Any]) -> dict[str, t.Any]:
    """What status and ensure report about a container."""
    state = info.get("State") or {}
    labels = (info.get("Config") or {}).get("Labels") or {}
    started = parse_time(state.get("StartedAt", ""))
    bound = published_port(info)
    running = bool(state.get("Running"))
    return {
        "mode": "container",
        "engine": engine,
        "container": info.get("Name", "").lstrip("/"),
        "container_id": info.get("Id", "")[:12],
        "profile": labels.get(LABEL_PROFILE),
        "image": labels.get(LABEL_IMAGE) or (info.get("Config") or {}).get("Image"),
        "state": state.get("Status"),
        "running": running,
        "pid": state.get("Pid") or None,
        "started": started,
        "uptime": round(time.time() - started, 1) if started and running else None,
        "restarts": info.get("RestartCount", 0),
        "gpus": labels.get(LABEL_GPUS) or None,
        "gpu_names": gpu_names(labels.get(LABEL_GPUS)),
        "port": bound[1] if bound else None,
        "bind": bound[0] if bound else None,
        "published": [{"port": c, "host_port": h} for c, h in published_ports(info).items()],
    }


def gpu_names(gpus: str | None) -> list[str]:
    """The host's names of the GPUs passed through (from nvidia-smi; [] without one)."""
    if not gpus or not shutil.which("nvidia-smi"):
        return []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,uuid,name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=2, stdin=subprocess.DEVNULL,
        ).stdout  # fmt: skip
        wanted = set(gpus.removeprefix("device=").split(","))
        rows = [[c.strip() for c in line.split(",", 2)] for line in out.splitlines() if line]
        return [
            f"{r[0]}: {r[2]}"
            for r in rows
            if len(r) == 3 and ("all" in wanted or wanted & {*r[:2]})
        ]
    return []


# ---------------------------------------------------------------------------------------------
# agent actions


def ensure(
    request: dict[str, t.Any],
    native: dict[str, t.Any] | None = None,
    report: t.Callable[[str], None] = progress,
) -> dict[str, t.Any]:
    """Re-attach to the profile's container or start it; its URL token, port and state.

    `native` is the profile's native runtime if one runs (a profile is one or the other).
    """
    profile = request.get("profile", "default")
    image = check_image(request["image"])
    gpus = request.get("gpus") or None
    publish = publish_request(request)
    engine = detect_engine(request.get("engine"))
    if native is not None:
        raise ContainerError(
            f"profile {profile!r} runs the native runtime (pid {native.get('pid')}) on this "
            "host; stop it first (jupyter colabremote stop HOST) or use another --profile"
        )
    name = container_name(profile)
    info = inspect(engine, name)
    created = False
    if info is not None:
        labels = (info.get("Config") or {}).get("Labels") or {}
        has = (labels.get(LABEL_IMAGE), labels.get(LABEL_GPUS) or None)
        if has != (image, gpus):
            raise ContainerError(
                f"{name} runs {has[0]} (gpus {has[1] or 'none'}); stop it first (jupyter "
                f"colabremote stop HOST) to use {image} (gpus {gpus or 'none'})"
            )
        reattached = bool((info.get("State") or {}).get("Running"))
        if not reattached:
            report(f"starting the stopped container {name} again")
            res = engine_run([engine, "start", name])
            if res.returncode != 0:
                raise ContainerError(f"{engine} start {name} failed: {_last_error(res)}")
    else:
        reattached = False
        if not image_present(engine, image):
            pull(engine, image, report)
        env = {str(k): str(v) for k, v in (request.get("env") or {}).items()}
        workdir = request.get("workdir")
        if workdir:
            workdir = server_path(workdir)
            os.makedirs(workdir, mode=0o700, exist_ok=True)
        port = int(request.get("port") or 0) or free_port()
        extra = host_ports(publish, [port])
        argv = run_argv(engine, image, profile, port, gpus, env, workdir, extra)
        res = engine_run(argv, env={**os.environ, **env})
        if res.returncode != 0:
            # A half-created container (port taken, GPU runtime missing) is no use to anyone.
            engine_run(remove_argv(engine, name))
            error = _last_error(res)
            hint = gpu_hint(engine, error) if gpus else ""
            raise ContainerError(f"{engine} run {image} failed: {error}{hint}")
        created = True
    info = inspect(engine, name)
    bound = published_port(info or {})
    if info is None or bound is None:
        raise ContainerError(f"{name} publishes no port {CONTAINER_PORT}; stop it and start again")
    try:
        token, info = wait_ready(
            engine, name, bound[1], image, float(request.get("ready_deadline") or READY_DEADLINE)
        )
    except ContainerError:
        if created:
            engine_run(remove_argv(engine, name))
        raise
    return {**describe(engine, info), "token": token, "reattached": reattached}


def _managed(engine: str, profile: str | None = None) -> list[dict[str, t.Any]]:
    """inspect of every container this tool made with this engine (of one profile)."""
    label = f"{LABEL_PROFILE}={profile}" if profile else LABEL_PROFILE
    try:
        res = engine_run([engine, "ps", "--all", "--quiet", "--filter", f"label={label}"], 20)
        ids = res.stdout.split() if res.returncode == 0 else []
        if not ids:
            return []
        res = engine_run([engine, "container", "inspect", *ids])
    except ContainerError:  # an engine that hangs (unreachable daemon) has no containers
        return []
    with contextlib.suppress(ValueError):
        return [i for i in json.loads(res.stdout or "[]") if isinstance(i, dict)]
    return []


def running_for(profile: str) -> dict[str, t.Any] | None:
    """The profile's running container, with any engine on PATH, or None."""
    for engine in available_engines():
        for info in _managed(engine, profile):
            if (info.get("State") or {}).get("Running"):
                return describe(engine, info)
    return None


def stop(request: dict[str, t.Any]) -> dict[str, t.Any]:
    """Stop and remove the profile's container (its kernels die with it); {} if there is none."""
    profile = request.get("profile", "default")
    engines = [request["engine"]] if request.get("engine") else available_engines()
    for engine in engines:
        for info in _managed(engine, profile):
            desc = describe(engine, info)
            ref = info.get("Id") or desc["container"]
            engine_run([engine, "stop", "--time", str(STOP_GRACE), ref], timeout=STOP_GRACE + 30)
            res = engine_run(remove_argv(engine, ref))
            if res.returncode != 0 and inspect(engine, ref) is not None:
                raise ContainerError(f"{engine} rm {desc['container']} failed: {_last_error(res)}")
            return {"stopped": True, **desc}
    return {}


def status(request: dict[str, t.Any]) -> list[dict[str, t.Any]]:
    """Every container this tool runs on the host, all profiles and engines."""
    out = []
    for engine in available_engines():
        with contextlib.suppress(ContainerError):
            out += [describe(engine, info) for info in _managed(engine)]
    return out


def doctor(request: dict[str, t.Any]) -> dict[str, t.Any]:
    """Checks for `doctor`: engine, image, GPU runtime, the container and its published port.

    Each check is {"name", "ok", "detail", "fix"}; the list stops at the first failure.
    """
    checks: list[dict[str, t.Any]] = []

    def check(name: str, ok: bool, detail: str, fix: str = "") -> bool:
        checks.append({"name": name, "ok": ok, "detail": detail, "fix": fix})
        return ok

    profile = request.get("profile", "default")
    image, gpus = request.get("image"), request.get("gpus")
    try:
        engine = detect_engine(request.get("engine"))
    except ContainerError as e:
        check("container engine", False, str(e), "apt-get install podman (or docker.io)")
        return {"checks": checks}
    res = engine_run([engine, "version", "--format", "{{.Client.Version}}"])
    version = res.stdout.strip() or "?"
    res = engine_run(
        [
            engine,
            "info",
            "--format",
            "{{json .Host.OCIRuntime}}" if engine == "podman" else "{{.ServerVersion}}",
        ]
    )
    if not check(
        "container engine",
        res.returncode == 0,
        f"{engine} {version}" if res.returncode == 0 else f"{engine} {version}: {_last_error(res)}",
        "start the docker daemon (systemctl start docker) and make sure you may use it"
        if engine == "docker"
        else f"run `{engine} info` on the host to see what fails",
    ):
        return {"checks": checks}
    name = container_name(profile)
    info = inspect(engine, name)
    labels = ((info or {}).get("Config") or {}).get("Labels") or {}
    image = image or labels.get(LABEL_IMAGE)
    gpus = gpus or labels.get(LABEL_GPUS)
    if image:
        present = image_present(engine, image)
        check(
            "image",
            True,
            f"{image} present" if present else f"{image} not pulled yet: start pulls it",
        )
    if gpus:
        ok, detail, fix = gpu_runtime(engine)
        if not check("GPU runtime", ok, detail, fix):
            return {"checks": checks}
    if info is None:
        check(
            "container",
            False,
            f"no container {name}",
            "jupyter colabremote start HOST --image IMAGE",
        )
        return {"checks": checks}
    desc = describe(engine, info)
    up = f"up {desc['uptime'] / 60:.0f} min" if desc["uptime"] is not None else desc["state"]
    if not check(
        "container",
        desc["running"],
        f"{name} ({desc['image']}), {up}, {desc['restarts']} restart(s)",
        "jupyter colabremote start HOST (it starts the container again)",
    ):
        return {"checks": checks}
    bound = published_port(info)
    if bound is None:
        check(
            "published port",
            False,
            f"{name} publishes no port {CONTAINER_PORT}",
            "stop and start again",
        )
        return {"checks": checks}
    host, port = bound
    if host not in ("127.0.0.1", "::1", "localhost"):
        check(
            "published port", False,
            f"{CONTAINER_PORT} is published on {host}:{port}: reachable from the network",
            "stop it and start it with `jupyter colabremote start` (loopback only)",
        )  # fmt: skip
        return {"checks": checks}
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        check("published port", True, f"127.0.0.1:{port} -> {CONTAINER_PORT} answers")
    except OSError as e:
        check("published port", False, f"127.0.0.1:{port}: {e}", "look at the container's log")
    return {"checks": checks}


def gpu_hint(engine: str, error: str) -> str:
    """What to do when the engine could not pass the GPUs through ("" for other errors)."""
    if not re.search(r"cdi|gpu|nvidia|device driver", error, re.IGNORECASE):
        return ""
    if engine == "podman":
        return (
            " (podman passes GPUs as CDI devices: install nvidia-container-toolkit and run "
            "`nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`)"
        )
    return (
        " (docker needs nvidia-container-toolkit: `nvidia-ctk runtime configure "
        "--runtime=docker && systemctl restart docker`)"
    )


def gpu_runtime(engine: str) -> tuple[bool, str, str]:
    """Whether the host can pass NVIDIA GPUs into containers: (ok, detail, fix)."""
    if not shutil.which("nvidia-smi"):
        return (
            False,
            "nvidia-smi not found: no NVIDIA driver on the host",
            "install the NVIDIA driver",
        )
    res = engine_run(["nvidia-smi", "-L"], timeout=10)
    gpus = [ln for ln in res.stdout.splitlines() if ln.startswith("GPU ")]
    if res.returncode != 0 or not gpus:
        return False, f"nvidia-smi: {_last_error(res)}", "check the NVIDIA driver (nvidia-smi)"
    if engine == "podman":
        specs = [
            p for d in ("/etc/cdi", "/var/run/cdi")
            for p in glob.glob(f"{d}/*.yaml") + glob.glob(f"{d}/*.json")
            if "nvidia.com" in open(p, errors="replace").read()
        ]  # fmt: skip
        if not specs:
            return (
                False,
                f"{len(gpus)} GPU(s), but no CDI spec for nvidia.com/gpu in /etc/cdi",
                "install nvidia-container-toolkit, then: nvidia-ctk cdi generate "
                "--output=/etc/cdi/nvidia.yaml",
            )
        return True, f"{len(gpus)} GPU(s), CDI spec {specs[0]}", ""
    res = engine_run(["docker", "info", "--format", "{{json .Runtimes}}"])
    if "nvidia" not in res.stdout and not shutil.which("nvidia-container-runtime-hook"):
        return (
            False,
            f"{len(gpus)} GPU(s), but docker has no NVIDIA runtime",
            "install nvidia-container-toolkit, then: nvidia-ctk runtime configure "
            "--runtime=docker && systemctl restart docker",
        )
    return True, f"{len(gpus)} GPU(s), NVIDIA container runtime present", ""
