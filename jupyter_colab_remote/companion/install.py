"""`start --install`: put this companion's own version of the package on the host.

As VS Code Remote-SSH installs the server matching its client: the exact version comes from
the host's package index when it has it, otherwise a wheel of this machine's installation
(companion/wheels.py) is uploaded over SFTP. Dependencies come from the host's index, or from
a folder of wheels uploaded with `--wheelhouse` (installed with `--find-links`, `--no-index`
first). A host without either gets one error naming the exact `pip download` command for its
Python and platform. Every failure here is exit code 7.

Where: the private venv `~/.local/share/jupyter-colab-remote/venv` (made by python3, or by the
chosen system interpreter, with `--system-site-packages` so kernels see the host's torch...);
`--remote-venv DIR` (created if missing); or the venv of a `--remote-python` venv interpreter.
A Python without ensurepip (Debian without python3-venv) gets `venv --without-pip` and a pip
wheel repacked from this machine's pip.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import stat
import typing as t
from pathlib import Path

from .. import __version__
from ..protocol.errors import ExitCode
from . import wheels
from .errors import CompanionError
from .remote import PRIVATE_VENV, describe_python, remote_path, sh_join, venv_python
from .ssh_connect import SSHConnection

#: Installed with the package: JupyterLab (the launcher card) on the host.
EXTRA = "lab"
#: Uploads go here on the host (SFTP, relative to the login's home).
REMOTE_CACHE = "~/.cache/jupyter-colab-remote"
MIN_PYTHON = (3, 10)
PROBE_TIMEOUT, VENV_TIMEOUT, PIP_TIMEOUT = 60.0, 300.0, 1800.0
PIP_OPTIONS = ["-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-input"]

#: Run by the host's interpreter before anything is installed (Python 3.6+ syntax).
PROBE = """\
import json, platform, sys, sysconfig
def can(name):
    try:
        __import__(name)
        return True
    except Exception:
        return False
libc, libc_version = platform.libc_ver()
print(json.dumps({
    "version": "%d.%d" % sys.version_info[:2], "full_version": platform.python_version(),
    "implementation": sys.implementation.name,
    "venv": sys.prefix != sys.base_prefix, "prefix": sys.prefix,
    "ensurepip": can("ensurepip"), "pip": can("pip"), "machine": platform.machine(),
    "libc": libc, "libc_version": libc_version, "platform": sysconfig.get_platform(),
}))
"""


@dataclasses.dataclass
class Target:
    """The environment to install into, and the interpreter that creates it if missing."""

    venv: str
    python: list[str]
    base: list[str]
    system_site: bool = False


class Installer:
    """Installs jupyter-colab-remote[lab] at this companion's version into one environment."""

    def __init__(
        self,
        conn: SSHConnection,
        remote_python: str | None = None,
        remote_venv: str | None = None,
        base: list[str] | None = None,
        wheel: str | None = None,
        wheelhouse: str | None = None,
    ) -> None:
        self.conn = conn
        self.host = conn.target.alias
        self.remote_python = remote_python
        self.remote_venv = remote_venv
        self.base = base or ["python3"]
        self.wheel = wheel
        self.wheelhouse = wheelhouse
        self._sftp: t.Any = None

    def install(self) -> list[str]:
        """Install; the argv prefix of the interpreter that has the package now."""
        try:
            target = self._target()
            info = self._ensure_venv(target)
            if not info["pip"]:
                self._bootstrap_pip(target.python)
            self._install_package(target.python, info)
            return target.python
        finally:
            if self._sftp is not None:
                self._sftp.close()

    # -- where ---------------------------------------------------------------------------------
    def _target(self) -> Target:
        if self.remote_venv:
            venv = self.remote_venv
            return Target(venv, [venv_python(venv)], ["python3"])
        if self.remote_python:
            info = self._probe([self.remote_python])
            if info["venv"]:  # the user's venv: its own packages, its own pip
                return Target(info["prefix"], [self.remote_python], [self.remote_python])
            base = [self.remote_python]
        else:
            base = self.base
        return Target(PRIVATE_VENV, [venv_python(PRIVATE_VENV)], base, system_site=True)

    def _ensure_venv(self, target: Target) -> dict[str, t.Any]:
        """The venv's probe, after creating it if it does not exist."""
        info = self._probe(target.python, missing_ok=True)
        if info is not None and not target.system_site:
            return info  # the user's venv, as it is
        base = self._probe(target.base)
        if info is not None and info["full_version"] == base["full_version"]:
            return info
        # Missing, or the private venv of another interpreter (an earlier --remote-python).
        flags = ["--clear"] if info is not None else []
        flags += ["--system-site-packages"] if target.system_site else []
        if not base["ensurepip"]:
            flags.append("--without-pip")  # Debian without python3-venv; pip comes later
        self._run([*target.base, "-m", "venv", *flags, target.venv], VENV_TIMEOUT)
        return self._probe(target.python)

    def _probe(self, python: list[str], missing_ok: bool = False) -> dict[str, t.Any] | None:
        """What the interpreter is (version, venv, pip, platform); None if missing_ok and absent."""
        rc, out, err = self.conn.run(sh_join([*python, "-c", PROBE]), timeout=PROBE_TIMEOUT)
        if rc in (126, 127) and missing_ok:
            return None
        try:
            info = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            last = (err.strip().splitlines() or [f"exit code {rc}"])[-1]
            raise CompanionError(
                f"cannot run {describe_python(python)} on {self.host}: {last}; "
                "choose an interpreter with --remote-python",
                exit_code=ExitCode.PACKAGE,
            ) from None
        version = tuple(int(x) for x in info["version"].split("."))
        if version < MIN_PYTHON:
            raise CompanionError(
                f"{describe_python(python)} on {self.host} is Python {info['version']}; "
                f"jupyter-colab-remote needs {'.'.join(map(str, MIN_PYTHON))}+ "
                "(choose one with --remote-python)",
                exit_code=ExitCode.PACKAGE,
            )
        return info

    # -- pip -----------------------------------------------------------------------------------
    def _bootstrap_pip(self, python: list[str]) -> None:
        """A venv without pip gets this machine's pip, run from its own wheel."""
        try:
            pip = wheels.pip_wheel()
        except CompanionError as e:
            raise CompanionError(
                f"{describe_python(python)} on {self.host} has no pip, and this machine has none "
                f"to upload ({e}); install python3-venv there",
                exit_code=ExitCode.PACKAGE,
            ) from e
        remote = f"{self._upload_dir('pip')}/{pip.name}"
        self._put(pip, remote)
        self._run([*python, f"{remote}/pip", *PIP_OPTIONS[2:], "--no-index", remote], PIP_TIMEOUT)

    def _install_package(self, python: list[str], info: dict[str, t.Any]) -> None:
        """pip install the package with its extra: index first, else uploaded wheels."""
        links: list[str] = []
        if self.wheelhouse:
            links = [self._upload_wheelhouse()]
        if self.wheel:
            spec = self._upload_own(Path(self.wheel))
        elif self.wheelhouse:
            spec = self._upload_own(wheels.own_wheel())
        else:
            spec = f"{wheels.OWN_DISTRIBUTION}[{EXTRA}]=={__version__}"
            missing = self._pip(python, spec, links, no_index=False)
            if missing is None:
                return
            if missing != wheels.OWN_DISTRIBUTION:
                raise self._missing_error(missing, info)
            spec = self._upload_own(wheels.own_wheel())  # not on the host's index
        # With a wheelhouse, offline first (fast, exactly those wheels), then with the index.
        for no_index in (True, False) if links else (False,):
            missing = self._pip(python, spec, links, no_index=no_index)
            if missing is None:
                return
        raise self._missing_error(missing, info)

    def _pip(self, python: list[str], spec: str, links: list[str], no_index: bool) -> str | None:
        """Run pip install; None when it worked, the requirement it could not find otherwise."""
        argv = [*python, *PIP_OPTIONS]
        if no_index:
            argv.append("--no-index")
        for link in links:
            argv += ["--find-links", link]
        rc, out, err = self.conn.run(sh_join([*argv, spec]), timeout=PIP_TIMEOUT)
        if rc == 0:
            return None
        found = re.findall(r"No matching distribution found for ([A-Za-z0-9][A-Za-z0-9._-]*)", err)
        if found:
            return re.sub(r"[-_.]+", "-", found[-1]).lower()
        raise self._failed(err or out, rc)

    def _missing_error(self, name: str, info: dict[str, t.Any]) -> CompanionError:
        """The one error for a host that cannot get the dependencies: how to bring them."""
        folder = "wheelhouse"
        argv = ["pip", "download", "--dest", folder, "--only-binary=:all:"]
        # The exact version: a dependency may need a newer patch release (Requires-Python).
        argv += ["--python-version", info["full_version"]]
        if info["implementation"] == "cpython":
            argv += ["--implementation", "cp", "--abi", "cp" + info["version"].replace(".", "")]
        for tag in platform_tags(info):
            argv += ["--platform", tag]
        argv += wheels.requirements(EXTRA)
        return CompanionError(
            f"installing jupyter-colab-remote {__version__} on {self.host} failed: its pip "
            f"cannot get {name} (no package index there, or none with a matching version). "
            f"Fetch the dependencies on a machine with internet access with `{shlex.join(argv)}` "
            f"and rerun with --wheelhouse {folder}",
            exit_code=ExitCode.PACKAGE,
        )

    # -- running and uploading -------------------------------------------------------------------
    def _run(self, argv: list[str], timeout: float) -> None:
        rc, out, err = self.conn.run(sh_join(argv), timeout=timeout)
        if rc != 0:
            raise self._failed(err or out, rc)

    def _failed(self, output: str, rc: int) -> CompanionError:
        lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR:")]
        last = (errors or lines or [f"exit code {rc}"])[-1]
        return CompanionError(
            f"installing jupyter-colab-remote {__version__} on {self.host} failed: {last}",
            exit_code=ExitCode.PACKAGE,
        )

    def _sftp_client(self) -> t.Any:
        if self._sftp is None:
            self._sftp = self.conn.transport.open_sftp_client()
        return self._sftp

    def _upload_dir(self, name: str) -> str:
        """`~/.cache/jupyter-colab-remote/NAME` on the host (made if missing); its full path."""
        sftp = self._sftp_client()
        path = remote_path(f"{REMOTE_CACHE}/{name}", sftp.normalize("."))
        parts = path.split("/")
        for i in range(2, len(parts) + 1):
            d = "/".join(parts[:i])
            try:
                sftp.stat(d)
            except OSError:
                sftp.mkdir(d, 0o700)
        return path

    def _put(self, local: Path, remote: str, skip_same_size: bool = False) -> None:
        sftp = self._sftp_client()
        if skip_same_size:
            try:
                st = sftp.stat(remote)
                if stat.S_ISREG(st.st_mode or 0) and st.st_size == local.stat().st_size:
                    return
            except OSError:
                pass
        sftp.put(str(local), remote)

    def _upload_own(self, wheel: Path) -> str:
        """Upload a wheel of the package; the pip requirement that installs it with its extra."""
        if not wheel.is_file():
            raise CompanionError(f"--wheel {wheel}: no such file", exit_code=ExitCode.USAGE)
        remote = f"{self._upload_dir('wheels')}/{wheel.name}"
        self._put(wheel, remote)
        return f"{remote}[{EXTRA}]"

    def _upload_wheelhouse(self) -> str:
        """Upload the *.whl of --wheelhouse (unchanged ones are kept); the folder on the host."""
        assert self.wheelhouse
        local = sorted(Path(self.wheelhouse).glob("*.whl"))
        remote = self._upload_dir("wheelhouse")
        for f in local:
            self._put(f, f"{remote}/{f.name}", skip_same_size=True)
        return remote


def check_wheelhouse(path: str) -> str:
    """A local --wheelhouse folder holding wheels, or a one-line usage error."""
    if not os.path.isdir(path):
        raise CompanionError(f"--wheelhouse {path}: not a directory", exit_code=ExitCode.USAGE)
    if not any(Path(path).glob("*.whl")):
        raise CompanionError(f"--wheelhouse {path}: no *.whl files in it", exit_code=ExitCode.USAGE)
    return path


#: glibc levels that wheels on PyPI are built for (PEP 600 `manylinux_2_N`), above 2014's 17.
MANYLINUX_LEVELS = (24, 26, 27, 28, 31, 34, 35, 36, 38, 39, 40, 41)


def platform_tags(info: dict[str, t.Any]) -> list[str]:
    """`pip download --platform` tags for the host: pip does not widen a manylinux_2_N tag to
    lower levels, so a glibc host gets its own level and each common lower one."""
    arch = info["machine"]
    m = re.fullmatch(r"2\.(\d+)", info.get("libc_version") or "")
    if info.get("libc") != "glibc" or not m:
        return [re.sub(r"[-.]", "_", info["platform"])]
    minor = int(m.group(1))
    levels = sorted({minor, *(n for n in MANYLINUX_LEVELS if n < minor)}, reverse=True)
    tags = [f"manylinux_2_{n}_{arch}" for n in levels if n > 17]
    return tags + [f"manylinux2014_{arch}"] if minor >= 17 else tags
