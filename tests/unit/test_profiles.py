"""Profiles: named connections read from jupyter_colabremote_config.{json,py} in config dirs."""

from __future__ import annotations

import json

import pytest

from jupyter_colab_remote.companion.errors import CompanionError
from jupyter_colab_remote.companion.profiles import companion_settings, lookup


def write_json(directory, profiles: dict, **extra) -> None:
    """A jupyter_colabremote_config.json in directory."""
    directory.mkdir(parents=True, exist_ok=True)
    cfg = {"ColabRemoteCompanion": {"profiles": profiles, **extra}}
    (directory / "jupyter_colabremote_config.json").write_text(json.dumps(cfg))


def test_lookup_returns_the_profile_with_its_name(tmp_path):
    """A profile's keys come back as written, plus `name`; other names are not profiles."""
    write_json(tmp_path, {"gpu": {"host": "me@gpu", "port": 9001, "remote_venv": "~/ml"}})
    settings = companion_settings([str(tmp_path)])
    assert lookup("gpu", settings) == {
        "host": "me@gpu", "port": 9001, "remote_venv": "~/ml", "name": "gpu",
    }  # fmt: skip
    assert lookup("me@gpu", settings) == {}


def test_default_profile_applies_without_a_name(tmp_path):
    """`default_profile` is used when start gets no host."""
    write_json(tmp_path, {"gpu": {"host": "gpu"}}, default_profile="gpu")
    settings = companion_settings([str(tmp_path)])
    assert lookup(None, settings)["host"] == "gpu"


def test_earlier_config_dir_wins_and_py_overrides_json(tmp_path):
    """Like Jupyter's own config: the first directory of the path wins; .py after .json."""
    user, system = tmp_path / "user", tmp_path / "system"
    write_json(system, {"gpu": {"host": "system-host"}, "lab": {"host": "lab"}})
    write_json(user, {"gpu": {"host": "json-host"}})
    (user / "jupyter_colabremote_config.py").write_text(
        "c.ColabRemoteCompanion.profiles = {'gpu': {'host': 'py-host'}}\n"
    )
    settings = companion_settings([str(user), str(system)])
    assert lookup("gpu", settings)["host"] == "py-host"


def test_unknown_keys_and_missing_host_are_errors(tmp_path):
    """A typo in a key, or no host, is a one-line error listing what is allowed."""
    write_json(tmp_path, {"typo": {"host": "h", "prot": 1}, "hostless": {"port": 1}})
    settings = companion_settings([str(tmp_path)])
    with pytest.raises(CompanionError, match=r"profile 'typo' has unknown keys \['prot'\]"):
        lookup("typo", settings)
    with pytest.raises(CompanionError, match="profile 'hostless' has no 'host'"):
        lookup("hostless", settings)


def test_broken_config_file_is_one_line_error(tmp_path):
    """A config file that raises is reported with its path, not a traceback."""
    (tmp_path / "jupyter_colabremote_config.py").write_text("1/0\n")
    with pytest.raises(CompanionError, match="cannot load .*jupyter_colabremote_config.py"):
        companion_settings([str(tmp_path)])
