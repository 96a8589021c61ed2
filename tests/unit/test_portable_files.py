"""The Windows (and macOS) branches of private files, locks and paths, run on Linux.

What is faked, and why: Windows' ACL call (jupyter_core's `win32_restrict_file_to_user`,
which needs pywin32 or advapi32 through ctypes), the `msvcrt` module (Windows only), and
`os.name` / `sys.platform` as jupyter_core's path functions read them (faking them for the
whole interpreter would break pathlib here). Everything else is real: files, descriptors,
renames, the directories computed.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import types
from pathlib import Path

import pytest

from jupyter_colab_remote import files


@pytest.fixture
def windows(monkeypatch):
    """files.py takes its Windows branches; the ACL calls are recorded with what the file
    held at that moment."""
    calls: list[tuple[str, bytes]] = []

    def restrict(fname: str) -> None:
        calls.append((fname, Path(fname).read_bytes()))

    import jupyter_core.paths

    monkeypatch.setattr(files, "WINDOWS", True)
    monkeypatch.setattr(jupyter_core.paths, "win32_restrict_file_to_user", restrict)
    return calls


def test_private_json_is_restricted_before_the_secret_is_written(tmp_path, windows):
    """The ACL is set on the temporary file while it is still empty, then it is renamed into
    place: the secret never sits in a file others may read, and no temp file is left."""
    target = tmp_path / "data" / "connections" / "gpu-box--default.json"
    files.write_private_json(target, {"token": "s3cret"})
    assert json.loads(target.read_text()) == {"token": "s3cret"}
    [(restricted, content)] = windows
    assert content == b""
    assert Path(restricted).parent == target.parent and restricted != str(target)
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]

    files.write_private_json(target, {"token": "rotated"})  # replacing an existing file
    assert json.loads(target.read_text()) == {"token": "rotated"}
    assert len(windows) == 2 and windows[1][1] == b""


def test_private_json_failure_leaves_no_temp_file(tmp_path, windows):
    """A value JSON cannot encode fails the write, leaving neither a temp file nor a target."""
    target = tmp_path / "state.json"
    with pytest.raises(TypeError):
        files.write_private_json(target, {"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_known_hosts_line_created_private_on_windows(tmp_path, windows):
    """A new known_hosts is restricted (empty) before the first line; appending to an existing
    one keeps its protection and adds the line."""
    known = tmp_path / ".ssh" / "known_hosts"
    files.append_private_line(known, "gpu-box ssh-ed25519 AAAA1")
    assert windows == [(str(known), b"")]
    files.append_private_line(known, "other ssh-ed25519 AAAA2\n")
    assert known.read_text() == "gpu-box ssh-ed25519 AAAA1\nother ssh-ed25519 AAAA2\n"
    assert len(windows) == 1
    with open(known, "a") as f:
        f.write("edited ssh-ed25519 AAAA3")  # by hand, no final newline
    files.append_private_line(known, "third ssh-ed25519 AAAA4")
    assert known.read_text().splitlines()[-2:] == [
        "edited ssh-ed25519 AAAA3",
        "third ssh-ed25519 AAAA4",
    ]


def test_posix_branch_is_0600(tmp_path, monkeypatch):
    """The POSIX branch: 0600 whatever the umask."""
    monkeypatch.setattr(files, "WINDOWS", False)
    old = os.umask(0)
    try:
        files.write_private_json(tmp_path / "a.json", {})
        files.append_private_line(tmp_path / "known_hosts", "x")
    finally:
        os.umask(old)
    for name in ("a.json", "known_hosts"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


class FakeMsvcrt(types.ModuleType):
    """msvcrt.locking as documented: LK_LOCK raises OSError after ~10 s of failed attempts
    (here: the first `busy` calls); records each call with the descriptor's offset."""

    LK_LOCK, LK_UNLCK = 1, 0

    def __init__(self, busy: int) -> None:
        super().__init__("msvcrt")
        self.busy = busy
        self.calls: list[tuple[int, int, int]] = []

    def locking(self, fd: int, mode: int, nbytes: int) -> None:
        self.calls.append((mode, os.lseek(fd, 0, os.SEEK_CUR), nbytes))
        if mode == self.LK_LOCK and self.busy:
            self.busy -= 1
            raise OSError(36, "Resource deadlock avoided")


def test_windows_lock_waits_then_unlocks(tmp_path, monkeypatch):
    """locked() on Windows retries a busy lock, holds byte 0 for the block, then unlocks it."""
    fake = FakeMsvcrt(busy=2)
    monkeypatch.setitem(sys.modules, "msvcrt", fake)
    monkeypatch.setattr(files, "WINDOWS", True)
    inside = []
    with files.locked(tmp_path / "tokens.json.lock"):
        inside.append(list(fake.calls))
    lock = (FakeMsvcrt.LK_LOCK, 0, 1)
    assert inside == [[lock, lock, lock]]
    assert fake.calls == [lock, lock, lock, (FakeMsvcrt.LK_UNLCK, 0, 1)]


def test_windows_lock_gives_up(tmp_path, monkeypatch):
    """A lock that stays busy past WINDOWS_LOCK_WAIT is an error, not a hang."""
    monkeypatch.setitem(sys.modules, "msvcrt", FakeMsvcrt(busy=10**6))
    monkeypatch.setattr(files, "WINDOWS", True)
    monkeypatch.setattr(files, "WINDOWS_LOCK_WAIT", 0.0)
    with pytest.raises(OSError), files.locked(tmp_path / "x.lock"):
        pass


class _Proxy(types.SimpleNamespace):
    """A module seen through a few overridden attributes."""

    def __init__(self, real: types.ModuleType, **overrides: object) -> None:
        super().__init__(**overrides)
        self._real = real

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)


@pytest.mark.parametrize(
    ("platform", "osname", "expected"),
    [
        ("win32", "nt", "{APPDATA}/jupyter"),
        ("darwin", "posix", "{HOME}/Library/Jupyter"),
        ("linux", "posix", "{HOME}/.local/share/jupyter"),
    ],
)
def test_files_live_in_the_platforms_jupyter_dirs(
    tmp_path, monkeypatch, platform, osname, expected
):
    """Connection records and the token store go under jupyter_core's data directory for the
    platform: %APPDATA%\\jupyter on Windows, ~/Library/Jupyter on macOS."""
    import jupyter_core.paths as jpaths

    from jupyter_colab_remote import tokens
    from jupyter_colab_remote.companion import state

    for var in ("JUPYTER_DATA_DIR", "JUPYTER_PLATFORM_DIRS", "XDG_DATA_HOME", "JUPYTER_NO_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("APPDATA", str(tmp_path / "AppData" / "Roaming"))
    monkeypatch.setattr(jpaths, "os", _Proxy(os, name=osname))
    monkeypatch.setattr(jpaths, "sys", _Proxy(sys, platform=platform))
    base = Path(expected.format(APPDATA=os.environ["APPDATA"], HOME=os.environ["HOME"]))
    assert state.state_dir() == base / "colabremote" / "connections"
    assert tokens.default_token_file() == base / "colabremote" / "tokens.json"


def test_local_runtime_on_windows_is_a_one_line_error(monkeypatch):
    """Running the runtime on the laptop itself is server-side (POSIX) code: on Windows,
    `start` and `stop` without a host say so and how to name a host, before doing anything."""
    from jupyter_colab_remote.companion import cli
    from jupyter_colab_remote.companion.errors import CompanionError

    monkeypatch.setattr(files, "WINDOWS", True)
    with pytest.raises(CompanionError, match=r"needs Linux or macOS .*start \[user@\]host"):
        cli.main(["start", "--port", "9"])
    with pytest.raises(CompanionError, match=r"needs Linux or macOS .*stop \[user@\]host"):
        cli.main(["stop"])
