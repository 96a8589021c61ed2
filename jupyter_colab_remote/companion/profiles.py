"""Named profiles: `start gpu-box` recalls host, port and environment from Jupyter config.

In `jupyter_colabremote_config.py` (or `.json`) in a Jupyter config directory
(`jupyter --config-dir`), next to the server extension's own settings::

    c.ColabRemoteCompanion.profiles = {
        "gpu-box": {
            "host": "me@gpu.example.org",
            "port": 9001,
            "remote_venv": "~/venvs/ml",
            "workdir": "~/projects/thesis",
            "env_file": "~/.config/thesis.env",
        },
    }
"""

from __future__ import annotations

import os
import typing as t

from jupyter_core.paths import jupyter_config_path
from traitlets import Dict, Unicode
from traitlets.config import Config, Configurable
from traitlets.config.loader import ConfigFileNotFound, JSONFileConfigLoader, PyFileConfigLoader

from .errors import CompanionError
from .options import PROFILE_KEYS

CONFIG_BASENAME = "jupyter_colabremote_config"


class ColabRemoteCompanion(Configurable):
    """The companion's settings, read from jupyter_colabremote_config.{py,json}."""

    profiles = Dict(
        value_trait=Dict(),
        config=True,
        help="Named connections: {'gpu-box': {'host': 'me@host', 'port': 9001, ...}}; keys are "
        f"start's options ({', '.join(PROFILE_KEYS)}).",
    )
    default_profile = Unicode(
        "", config=True, help="Profile used by `start` when no host is given (empty: none)."
    )


def load_config(paths: list[str] | None = None) -> Config:
    """Merge the config files from every Jupyter config directory (later ones win)."""
    merged = Config()
    for directory in reversed(paths if paths is not None else jupyter_config_path()):
        for loader_cls, ext in ((JSONFileConfigLoader, ".json"), (PyFileConfigLoader, ".py")):
            name = CONFIG_BASENAME + ext
            if not os.path.exists(os.path.join(directory, name)):
                continue
            try:
                merged.merge(loader_cls(name, path=directory).load_config())
            except ConfigFileNotFound:
                continue
            except Exception as e:  # a user's config file may raise anything
                raise CompanionError(f"cannot load {os.path.join(directory, name)}: {e}") from e
    return merged


def companion_settings(paths: list[str] | None = None) -> ColabRemoteCompanion:
    """The companion's configured settings."""
    return ColabRemoteCompanion(config=load_config(paths))


def lookup(name: str | None, settings: ColabRemoteCompanion | None = None) -> dict[str, t.Any]:
    """The profile of that name (with `name` set), or {} when it is not a profile."""
    settings = settings or companion_settings()
    name = name or settings.default_profile
    if not name or name not in settings.profiles:
        return {}
    profile = dict(settings.profiles[name])
    unknown = set(profile) - set(PROFILE_KEYS)
    if unknown:
        raise CompanionError(
            f"profile {name!r} has unknown keys {sorted(unknown)}; allowed: {sorted(PROFILE_KEYS)}"
        )
    if "host" not in profile:
        raise CompanionError(f"profile {name!r} has no 'host'")
    return {**profile, "name": name}
