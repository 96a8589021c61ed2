"""The companion's per-connection records: save/load/find/update, private file modes."""

from __future__ import annotations

import stat

import pytest

from jupyter_colab_remote.companion import state


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    """Records under tmp_path (JUPYTER_DATA_DIR), as for a user with an empty data dir."""
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def mode(path) -> int:
    """The permission bits of path."""
    return stat.S_IMODE(path.stat().st_mode)


def test_save_is_private_and_loads_back(data_dir):
    """A record (it holds the token) is 0600 in a 0700 directory; no temp file remains."""
    record = {"host": "gpu", "profile": "default", "token": "secret", "local_port": 9001}
    path = state.save("gpu", "default", record)
    assert path.parent == data_dir / "colabremote" / "connections"
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert state.load("gpu", "default") == record
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_update_merges_and_keys_are_file_safe():
    """update() merges into the record; host names with odd characters stay one file name."""
    state.save("me@[::1]:22", "a/b", {"token": "t"})
    merged = state.update("me@[::1]:22", "a/b", local_port=1)
    assert merged == {"token": "t", "local_port": 1} == state.load("me@[::1]:22", "a/b")
    assert state.path_for("me@[::1]:22", "a/b").name == "me@___1__22--a_b.json"


def test_load_of_missing_or_corrupt_record_is_none():
    """No record, or an unreadable one, reads as None (start then begins afresh)."""
    assert state.load("gpu", "default") is None
    state.path_for("gpu", "default").parent.mkdir(parents=True)
    state.path_for("gpu", "default").write_text("{not json")
    assert state.load("gpu", "default") is None


def test_find_default_then_the_only_profile():
    """Without a profile: the `default` record, else the host's only one; None if several."""
    assert state.find("gpu", None) is None
    state.save("gpu", "train", {"host": "gpu", "profile": "train"})
    assert state.find("gpu", None)["profile"] == "train"
    state.save("gpu", "eval", {"host": "gpu", "profile": "eval"})
    assert state.find("gpu", None) is None  # ambiguous
    assert state.find("gpu", "eval")["profile"] == "eval"
    state.save("gpu", "default", {"host": "gpu", "profile": "default"})
    assert state.find("gpu", None)["profile"] == "default"


def test_no_host_is_this_machine():
    """Host None finds the records of a host-less start (`local`)."""
    state.save("local", "default", {"host": None, "profile": "default"})
    assert state.find(None, None) == {"host": None, "profile": "default"}
    assert [r["profile"] for r in state.all_records()] == ["default"]
