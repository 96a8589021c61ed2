"""jupyter-colab-remote: any Jupyter server, on any host, as a Google Colab local runtime."""

from __future__ import annotations

try:
    # Written by every build (pip install, pip install -e .) from labextension/package.json.
    from ._version import __version__
except ImportError:  # a checkout not built yet: the same file, read directly
    import json
    from pathlib import Path

    _package_json = Path(__file__).parent.parent / "labextension" / "package.json"
    __version__: str = json.loads(_package_json.read_text())["version"]


def _jupyter_server_extension_points() -> list[dict[str, object]]:
    """Tell jupyter_server where the extension lives."""
    from .extension.app import ColabRemoteApp

    return [{"module": "jupyter_colab_remote.extension.app", "app": ColabRemoteApp}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the built JupyterLab extension lives (for `jupyter labextension develop`)."""
    return [{"src": "labextension", "dest": "jupyter-colab-remote"}]
