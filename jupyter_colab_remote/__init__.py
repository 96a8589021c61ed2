"""jupyter-colab-remote: any Jupyter server, on any host, as a Google Colab local runtime."""

from __future__ import annotations

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict[str, object]]:
    """Tell jupyter_server where the extension lives."""
    from .server.app import ColabRemoteApp

    return [{"module": "jupyter_colab_remote.server.app", "app": ColabRemoteApp}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the built JupyterLab extension lives (for `jupyter labextension develop`)."""
    return [{"src": "labextension", "dest": "jupyter-colab-remote"}]
