"""Wheels of what this machine has installed (this package, pip), for a host that needs them.

`start --install` brings the companion's own version to the host, as VS Code Remote-SSH
brings its matching server: nobody builds a wheel by hand. A regular installation is
repacked from its RECORD (package files to the wheel's root, files installed under the
prefix to `<name>-<version>.data/data/`, console scripts left out: pip writes them again
from entry_points.txt); an editable (development) installation is built from the package
directory and the data files pyproject.toml maps (`shared-data`). Wheels are cached in the
user's cache directory, keyed by version and content hash.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata as md
import io
import json
import os
import re
import sysconfig
import tempfile
import zipfile
from pathlib import Path

from packaging.version import Version

from ..protocol.errors import ExitCode
from .errors import CompanionError

OWN_DISTRIBUTION = "jupyter-colab-remote"
OWN_PACKAGE = "jupyter_colab_remote"
#: dist-info files that describe one installation, not the distribution: never repacked.
INSTALLATION_FILES = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "RECORD.jws"}
#: Fixed timestamp: the same files always give the same wheel.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)

#: (path inside the wheel, file on this machine)
Entries = list[tuple[str, Path]]


def cache_dir() -> Path:
    """Where built wheels are kept (the user's cache directory)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("jupyter-colab-remote")) / "wheels"


def same_version(a: str, b: str) -> bool:
    """Equal as PEP 440 versions: package.json's "0.2.0-alpha.1" is the metadata's "0.2.0a1"."""
    return Version(a) == Version(b)


def own_wheel(cache: Path | None = None) -> Path:
    """A wheel of the jupyter-colab-remote this companion runs (built once, then cached)."""
    import jupyter_colab_remote

    dist = md.distribution(OWN_DISTRIBUTION)
    if not same_version(dist.version, jupyter_colab_remote.__version__):
        raise CompanionError(
            f"the installed metadata says jupyter-colab-remote {dist.version} but the code is "
            f"{jupyter_colab_remote.__version__}; reinstall it here (pip install -e .)",
            exit_code=ExitCode.PACKAGE,
        )
    if is_editable(dist):
        package = Path(jupyter_colab_remote.__file__).resolve().parent
        entries = editable_entries(dist, package.parent)
        return write_wheel(dist, entries, None, cache or cache_dir())
    return installed_wheel(OWN_DISTRIBUTION, cache)


def installed_wheel(name: str, cache: Path | None = None) -> Path:
    """A wheel repacked from the regular installation of distribution `name` here."""
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        raise CompanionError(
            f"{name} is not installed on this machine", exit_code=ExitCode.PACKAGE
        ) from None
    if is_editable(dist) or not dist.files:
        raise CompanionError(
            f"{name} is installed here without a file list (editable, or by the system's "
            "package manager): cannot repack it",
            exit_code=ExitCode.PACKAGE,
        )
    entries = regular_entries(dist)
    wheel_file = dist.read_text("WHEEL")
    return write_wheel(dist, entries, wheel_file, cache or cache_dir())


def pip_wheel(cache: Path | None = None) -> Path:
    """A pip wheel: this environment's pip repacked, else the one ensurepip bundles here."""
    try:
        return installed_wheel("pip", cache)
    except CompanionError as e:
        try:
            import ensurepip
        except ImportError:
            raise e from None
        bundled = sorted((Path(ensurepip.__file__).parent / "_bundled").glob("pip-*.whl"))
        if not bundled:
            raise
        return bundled[-1]


def is_editable(dist: md.Distribution) -> bool:
    """Whether the distribution is installed in development mode (pip install -e)."""
    try:
        info = json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        info = {}
    return bool(info.get("dir_info", {}).get("editable"))


def _dist_info_name(dist: md.Distribution) -> str:
    """`<name>-<version>.dist-info`, as the wheel spec spells it."""
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    return f"{name}-{dist.version}.dist-info"


def _data_dir(dist: md.Distribution) -> str:
    return _dist_info_name(dist).replace(".dist-info", ".data")


def _skip(rel: str) -> bool:
    """Byte code is compiled again on the host."""
    return "__pycache__" in rel.split("/") or rel.endswith((".pyc", ".pyo"))


def _dist_info_entries(dist: md.Distribution) -> Entries:
    """METADATA, entry points, licenses...: what describes the distribution itself."""
    info = _dist_info_name(dist)
    out: Entries = []
    for f in dist.files or []:
        parts = f.parts
        if not parts or not parts[0].endswith(".dist-info") or parts[-1] in INSTALLATION_FILES:
            continue
        if parts[-1] == "WHEEL" or _skip(str(f)):
            continue  # WHEEL is written fresh (or copied) by write_wheel
        path = Path(os.path.normpath(dist.locate_file(f)))
        if path.is_file():
            out.append(("/".join([info, *parts[1:]]), path))
    return out


def _prefix_of(site_dir: Path) -> Path:
    """The installation prefix of a site-packages directory (prefix/lib/pythonX.Y/site-packages
    on POSIX, prefix/Lib/site-packages on Windows: as deep as this interpreter's scheme)."""
    depth = len(
        Path(os.path.relpath(sysconfig.get_path("purelib"), sysconfig.get_path("data"))).parts
    )
    return site_dir.parents[depth - 1]


def regular_entries(dist: md.Distribution) -> Entries:
    """What a regular installation's RECORD lists, mapped back to the wheel's layout."""
    site_dir = Path(os.path.normpath(dist.locate_file("")))
    prefix = _prefix_of(site_dir)
    scripts = os.path.relpath(sysconfig.get_path("scripts"), sysconfig.get_path("data"))
    out = _dist_info_entries(dist)
    for f in dist.files or []:
        rel = str(f).replace(os.sep, "/")
        if _skip(rel) or f.parts[0].endswith(".dist-info"):
            continue
        path = Path(os.path.normpath(site_dir / f))
        if not path.is_file():
            continue
        if not rel.startswith("../"):
            out.append((rel, path))
            continue
        under = os.path.relpath(path, prefix).replace(os.sep, "/")
        if under.startswith("../") or under.split("/")[0] == scripts:
            continue  # console scripts: pip makes them from entry_points.txt
        out.append((f"{_data_dir(dist)}/data/{under}", path))
    return out


def _load_toml(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise CompanionError(
                "building a wheel from a development install needs Python 3.11+ (tomllib); "
                "build one (pip wheel --no-deps .) and pass --wheel FILE",
                exit_code=ExitCode.PACKAGE,
            ) from None
    with open(path, "rb") as f:
        return tomllib.load(f)


def editable_entries(dist: md.Distribution, root: Path) -> Entries:
    """A development checkout as its wheel holds it: the packages and pyproject's shared-data."""
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        raise CompanionError(
            f"editable install without {pyproject}; pass --wheel FILE", exit_code=ExitCode.PACKAGE
        )
    target = _load_toml(pyproject)["tool"]["hatch"]["build"]["targets"]["wheel"]
    shared: dict[str, str] = target.get("shared-data", {})
    sources = {(root / src).resolve() for src in shared}
    out = _dist_info_entries(dist)
    for package in target.get("packages", [OWN_PACKAGE]):
        for path in sorted((root / package).rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and not _skip(rel) and not _under_any(path.resolve(), sources):
                out.append((rel, path))
    data = f"{_data_dir(dist)}/data"
    for src, dst in shared.items():
        path = root / src
        if path.is_file():
            out.append((f"{data}/{dst}", path))
        elif path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file() and not _skip(f.as_posix()):
                    out.append((f"{data}/{dst}/{f.relative_to(path).as_posix()}", f))
        else:
            raise CompanionError(
                f"{path} is missing (pyproject.toml shared-data); build the checkout first "
                "(pip install -e .)",
                exit_code=ExitCode.PACKAGE,
            )
    return out


def _under_any(path: Path, dirs: set[Path]) -> bool:
    return any(path == d or d in path.parents for d in dirs)


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write_wheel(
    dist: md.Distribution, entries: Entries, wheel_file: str | None, cache: Path
) -> Path:
    """Zip the entries with a WHEEL file and a fresh RECORD; reuse a cached identical wheel."""
    wheel_file = wheel_file or (
        "Wheel-Version: 1.0\nGenerator: jupyter-colab-remote\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n"
    )
    tag = re.search(r"^Tag: (\S+)$", wheel_file, re.M)
    info = _dist_info_name(dist)
    files = {arc: path.read_bytes() for arc, path in entries}
    files[f"{info}/WHEEL"] = wheel_file.encode()
    modes = {arc: path.stat().st_mode & 0o777 for arc, path in entries}
    key = hashlib.sha256()
    for arc in sorted(files):
        key.update(arc.encode() + b"\0" + hashlib.sha256(files[arc]).digest())
    name = f"{info.removesuffix('.dist-info')}-{tag.group(1) if tag else 'py3-none-any'}.whl"
    out = cache / f"{dist.version}-{key.hexdigest()[:16]}" / name
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for arc in sorted(files):
        writer.writerow([arc, _digest(files[arc]), len(files[arc])])
    writer.writerow([f"{info}/RECORD", "", ""])
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as z:
            # dist-info last, RECORD at the very end (as wheel builders write them).
            order = sorted(files, key=lambda a: (a.startswith(info), a))
            for arc in order:
                z.writestr(_zip_info(arc, modes.get(arc, 0o644)), files[arc])
            z.writestr(_zip_info(f"{info}/RECORD", 0o644), record.getvalue())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _zip_info(arc: str, mode: int) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(arc, ZIP_DATE)
    zi.external_attr = (0o100000 | mode) << 16
    zi.compress_type = zipfile.ZIP_DEFLATED
    return zi


def requirements(extra: str) -> list[str]:
    """This package's requirements with `extra`, as `pip download` arguments (markers kept
    only where they are not about the extra)."""
    from packaging.requirements import Requirement

    out = []
    for line in md.requires(OWN_DISTRIBUTION) or []:
        req = Requirement(line)
        if req.marker is not None:
            if not req.marker.evaluate({"extra": extra}):
                continue
            if "extra" in str(req.marker):
                req.marker = None
        out.append(str(req))
    return out
