"""A stand-in for Colab's runtime image, and a private podman, for tests (no registry here).

The image is imported (`podman import`) from a root filesystem tarball built from this
machine's own Python: the interpreter, its standard library (without tests, tkinter, idle),
the distributions jupyter_server and ipykernel need (from their metadata, RECORD files), the
shared libraries all of that links against (ldd), /bin/sh, and a minimal /etc. Files keep
their absolute paths, so the interpreter finds its prefix as on the host. ~150 MB; built
once per test session.

Its entrypoint behaves as Colab's image does for the agent: it serves plain Jupyter (no
jupyter-colab-remote) on 8080 and prints `http://127.0.0.1:8080/?token=...` on stdout; the
token is generated on the container's first start and kept in the container's own
filesystem, so a restart by the engine serves the same token.

`PrivatePodman(dir)` writes a containers.conf and a storage.conf under `dir` (storage, run
root, network config, events, tmp: all there) for CONTAINERS_CONF and
CONTAINERS_STORAGE_CONF, so tests never touch the machine's own containers or images.
Podman (Debian 12) runs here only with runc and explicit `default_ulimits`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import jupyter_colab_remote

#: What the image runs: Jupyter and a kernel; jupyter-colab-remote only for the image of
#: docs/Dockerfile.colab (Colab's image plus the extension), tagged with its own CMD.
IMAGE_ROOTS = ("jupyter_server", "ipykernel", "jupyter-colab-remote")
ENTRYPOINT = "/colab-test-entrypoint.py"
#: Left out of the standard library: big and never imported by a server or a kernel.
STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages"}

ENTRYPOINT_SCRIPT = '''\
"""Colab-like runtime: plain Jupyter on 8080; prints its URL with the token, as Colab's does."""
import os, secrets, sys

path = "/var/lib/colab-test/token"
try:
    token = open(path).read().strip()
except FileNotFoundError:  # first start: the token survives restarts of this container
    token = secrets.token_hex(24)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(token)
print("colab-test runtime starting", flush=True)
print(f"  http://127.0.0.1:8080/?token={token}", flush=True)
os.environ["JUPYTER_TOKEN"] = token
os.execv(sys.executable, [
    sys.executable, "-m", "jupyter_server", "--ip=0.0.0.0", "--port=8080",
    "--ServerApp.port_retries=0", "--ServerApp.open_browser=False", "--allow-root",
    "--ServerApp.root_dir=/root",
    # As Colab's image configures its Jupyter (behind its proxy):
    r"--ServerApp.allow_origin_pat=https://colab\\.(sandbox|research)\\.google\\.com",
    "--ServerApp.allow_credentials=True",
])
'''


def _closure(roots: tuple[str, ...]) -> dict[str, md.Distribution]:
    """The installed distributions `roots` need (requirements without extras, markers applied)."""
    seen: dict[str, md.Distribution] = {}
    todo = list(roots)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        dist = md.distribution(name)
        seen[name] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def _site_dirs(dists: dict[str, md.Distribution]) -> list[str]:
    """The directories holding the distributions (their PYTHONPATH inside the image)."""
    dirs = []
    for dist in dists.values():
        d = str(Path(str(dist.locate_file(""))).resolve())
        if d not in dirs:
            dirs.append(d)
    return dirs


def _python_files() -> tuple[Path, list[Path], list[str]]:
    """(interpreter, files to include, PYTHONPATH entries)."""
    python = Path(os.path.realpath(sys.executable))
    files: list[Path] = [python]
    stdlib = Path(os.__file__).resolve().parent  # the standard library, also from a venv
    for entry in stdlib.iterdir():
        if entry.name in STDLIB_SKIP or entry.name.startswith("config-"):
            continue
        if entry.is_dir():
            files += [p for p in entry.rglob("*") if p.is_file()]
        elif entry.is_file():
            files.append(entry)
    dists = _closure(IMAGE_ROOTS)
    for dist in dists.values():
        for f in dist.files or []:
            p = Path(str(dist.locate_file(f))).resolve()
            if p.is_file():
                files.append(p)
    share = Path(sys.prefix) / "share" / "jupyter" / "kernels" / "python3"
    if share.is_dir():
        files += [p for p in share.rglob("*") if p.is_file()]
    # This package as the test run imports it (an editable install has only metadata there).
    package = Path(jupyter_colab_remote.__file__).resolve().parent
    files += [p for p in package.rglob("*") if p.is_file() and "labextension" not in p.parts]
    pythonpath = [str(package.parent), *_site_dirs(dists)]
    # Optimised byte code (.opt-1/.opt-2.pyc) is never used without -O: half the size. And
    # plain Jupyter must not load the extension: only `serve` (its own CMD) runs it.
    files = [p for p in files if ".opt-" not in p.name and p.name != "jupyter_colab_remote.json"]
    return python, files, pythonpath


def _shared_libs(binaries: list[Path]) -> set[Path]:
    """Every shared library the binaries load (ldd), as the paths the loader opens."""
    libs: set[Path] = set()
    pending = [str(b) for b in binaries]
    for i in range(0, len(pending), 200):
        out = subprocess.run(
            ["ldd", *pending[i : i + 200]], capture_output=True, text=True, timeout=120
        ).stdout
        for m in re.finditer(r"(?:=> )?(/\S+) \(0x", out):
            libs.add(Path(os.path.normpath(m[1])))
    return libs


def build_rootfs_tar(dest: Path) -> Path:
    """Write the image's root filesystem as a tarball at `dest`."""
    python, files, pythonpath = _python_files()
    sh = Path("/bin/sh")
    elf = [python, sh, *(p for p in files if ".so" in p.name)]
    libs = _shared_libs(elf)
    dirs_done: set[str] = set()

    def add_dirs(tar: tarfile.TarFile, path: Path) -> None:
        for parent in reversed(path.parents):
            name = str(parent).lstrip("/")
            if not name or name in dirs_done:
                continue
            dirs_done.add(name)
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)

    def add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
        info = tarfile.TarInfo(name.lstrip("/"))
        info.size, info.mode = len(data), mode
        add_dirs(tar, Path(name))
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(dest, "w") as tar:
        for path in sorted(set(files) | libs | {sh}):
            add_dirs(tar, path)
            # Dereference: a library reached through a symlink is stored as a file there.
            info = tar.gettarinfo(os.path.realpath(path), arcname=str(path).lstrip("/"))
            with open(path, "rb") as f:
                tar.addfile(info, f)
        add_bytes(tar, "/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        add_bytes(tar, "/etc/group", b"root:x:0:\n")
        add_bytes(tar, "/etc/hosts", b"127.0.0.1 localhost\n")
        add_bytes(tar, ENTRYPOINT, ENTRYPOINT_SCRIPT.encode())
        for d, mode in (("tmp", 0o1777), ("root", 0o700), ("var/lib", 0o755)):
            if d not in dirs_done:
                dirs_done.add(d)
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, mode
                tar.addfile(info)
    meta = {"python": str(python), "pythonpath": pythonpath}
    dest.with_suffix(".json").write_text(json.dumps(meta))
    return dest


class PrivatePodman:
    """podman with its own configuration, storage and state under `root` (see module doc)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        for d in ("storage", "run", "networks"):
            (root / d).mkdir(exist_ok=True)
        # Podman's tmp dir holds slirp4netns API sockets named by 64-hex container ids: a
        # UNIX socket path must stay under 108 bytes, so it lives in a short directory.
        self.tmp = Path(tempfile.mkdtemp(prefix="crpod-"))
        self.containers_conf = root / "containers.conf"
        self.containers_conf.write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n'
            # User-mode networking: no bridge, no iptables rules, no addresses shared with
            # other podman users of this machine; ports are published by slirp4netns itself.
            'netns = "slirp4netns"\n'
            "[network]\n"
            f'network_config_dir = "{root}/networks"\n'
            "[engine]\n"
            'runtime = "runc"\n'
            'network_cmd_options = ["port_handler=slirp4netns"]\n'
            f'tmp_dir = "{self.tmp}"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{self.tmp}/events.log"\n'
        )
        self.storage_conf = root / "storage.conf"
        self.storage_conf.write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{root}/storage"\nrunroot = "{root}/run"\n'
        )

    @property
    def env(self) -> dict[str, str]:
        """The variables that point podman at this configuration."""
        return {
            "CONTAINERS_CONF": str(self.containers_conf),
            "CONTAINERS_STORAGE_CONF": str(self.storage_conf),
        }

    def run(self, *args: str, timeout: float = 120.0, check: bool = True, **kw):
        """`podman ARGS` with this configuration (bounded)."""
        res = subprocess.run(
            ["podman", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=kw.pop("stdin", subprocess.DEVNULL),
            **kw,
        )
        if check and res.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)} failed ({res.returncode}): {res.stderr}")
        return res

    def import_image(self, tarball: Path, tag: str) -> None:
        """`podman import` the rootfs tarball as `tag`, with the entrypoint and PYTHONPATH."""
        meta = json.loads(tarball.with_suffix(".json").read_text())
        cmd = json.dumps([meta["python"], ENTRYPOINT])
        self.run(
            "import",
            "--change", f"CMD {cmd}",
            "--change", f"ENV PYTHONPATH={':'.join(meta['pythonpath'])}",
            "--change", "ENV HOME=/root",
            "--change", "ENV PYTHONDONTWRITEBYTECODE=1",
            "--change", "EXPOSE 8080",
            str(tarball), tag,
            timeout=300,
        )  # fmt: skip

    def containers(self) -> list[dict]:
        """Every container of this podman (running or not)."""
        res = self.run("ps", "-a", "--format", "json")
        return json.loads(res.stdout or "[]")

    def cleanup(self) -> None:
        """Remove every container and image, unmount what podman mounted, delete it all."""
        with contextlib.suppress(Exception):
            self.run("rm", "--all", "--force", "--time", "0", timeout=60, check=False)
        with contextlib.suppress(Exception):
            self.run("rmi", "--all", "--force", timeout=60, check=False)
        # The overlay driver bind-mounts its own directory (and layers, while in use).
        prefix = str(self.root) + "/"
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        for target in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True, timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)
        end = time.monotonic() + 10
        while True:
            try:
                shutil.rmtree(self.root)
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.2)


def podman_usable() -> str | None:
    """None if podman and runc exist, else why the container tests must skip."""
    if os.geteuid() != 0:
        return "the container tests run rootful podman (root needed)"
    for tool in ("podman", "runc", "conmon"):
        if shutil.which(tool) is None and not Path(f"/usr/bin/{tool}").exists():
            return f"{tool} missing: apt-get install podman runc"
    return None
