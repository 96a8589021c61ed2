"""Private files shared by every process: an atomic private JSON writer and a file lock.

Portable: no POSIX-only module is imported at module level (the companion runs on Windows
and macOS laptops). "Private" is mode 0600 on POSIX and, on Windows (where modes mean
nothing), an ACL granting only this user and the Administrators, set by jupyter_core's
`win32_restrict_file_to_user` before any secret is written (as its `secure_write` does).
The lock is `fcntl.flock` on POSIX and `msvcrt.locking` on Windows.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import typing as t
from collections.abc import Iterator
from pathlib import Path

#: Whether Windows rules apply (ACLs, msvcrt locks); a name tests can switch.
WINDOWS = os.name == "nt"
#: How long `locked` waits on Windows before giving up (msvcrt has no blocking lock).
WINDOWS_LOCK_WAIT = 120.0


def restrict_to_user(path: str | os.PathLike[str]) -> None:
    """Make an existing file readable and writable by this user only (before it holds a
    secret): 0600 on POSIX, an owner-only ACL on Windows."""
    if WINDOWS:
        from jupyter_core.paths import win32_restrict_file_to_user

        win32_restrict_file_to_user(str(path))
    else:
        os.chmod(path, 0o600)  # mkstemp/os.open create 0600 already; a umask policy may differ


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create a directory (and parents) for private files: 0700 on POSIX; on Windows the
    user's profile directories (AppData, .ssh) are private already and modes are ignored."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def write_private_json(path: str | os.PathLike[str], data: t.Any) -> Path:
    """Replace `path` with `data` as JSON, atomically (a reader sees the old or the new file,
    never half of one) and readable by this user only (see restrict_to_user), whatever the
    umask; the directory is created private if missing."""
    path = Path(path)
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        if WINDOWS:
            # An ACL is set by path on a closed file (jupyter_core's approach), before writing.
            os.close(fd)
            restrict_to_user(tmp)
            fd = os.open(tmp, os.O_WRONLY | getattr(os, "O_BINARY", 0))
        else:
            restrict_to_user(tmp)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        _replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _replace(src: str, dst: Path) -> None:
    """os.replace; on Windows a reader holding `dst` open for a moment makes it fail
    (PermissionError), so retry briefly there."""
    deadline = time.monotonic() + 2.0
    while True:
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if not WINDOWS or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def append_private_line(path: str | os.PathLike[str], line: str) -> None:
    """Append a line to a file only this user may read (created so if missing), such as
    known_hosts."""
    path = Path(path)
    private_dir(path.parent)
    created = not path.exists()
    if created and WINDOWS:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        restrict_to_user(path)
    # A file whose last line has no newline (edited by hand) must not swallow ours.
    sep = "" if created or path.read_bytes()[-1:] in (b"", b"\n") else "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8", newline="\n") as f:
        f.write(sep + line.rstrip("\n") + "\n")


def _lock_windows(fd: int) -> None:
    """Lock the first byte of the file (msvcrt.LK_LOCK retries for ~10 s, then raises)."""
    import msvcrt

    deadline = time.monotonic() + WINDOWS_LOCK_WAIT
    while True:
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_LOCK, 1)  # type: ignore[attr-defined]
            return
        except OSError:
            if time.monotonic() > deadline:
                raise


def _unlock_windows(fd: int) -> None:
    import msvcrt

    os.lseek(fd, 0, os.SEEK_SET)
    with contextlib.suppress(OSError):
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]


@contextlib.contextmanager
def locked(lock_path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` (created private) for the block; other
    processes taking the same lock wait."""
    lock_path = Path(lock_path)
    private_dir(lock_path.parent)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if WINDOWS:
            _lock_windows(fd)
            try:
                yield
            finally:
                _unlock_windows(fd)
        else:
            import fcntl  # POSIX only: imported here so the module loads everywhere

            fcntl.flock(fd, fcntl.LOCK_EX)
            yield  # closing the descriptor releases the lock
    finally:
        os.close(fd)
