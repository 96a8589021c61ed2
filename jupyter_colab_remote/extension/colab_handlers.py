"""Colab's own runtime endpoints: /api/colab/build-info, /resources and /drive."""

from __future__ import annotations

import json
import os
import typing as t

from jupyter_server.auth.decorator import authorized
from tornado import web

from .resources import resource_stats
from .token_handlers import ColabRemoteAPIHandler

#: Colab's runtime prefixes its JSON with this anti-XSSI guard; its client strips it.
XSSI_PREFIX = ")]}'\n"


class ColabAPIHandler(ColabRemoteAPIHandler):
    """Base for Colab's endpoints: answers JSON behind the XSSI prefix."""

    def finish_xssi(self, data: t.Any) -> None:
        """Send `data` as Colab's runtime does."""
        self.set_header("Content-Type", "application/json")
        self.finish(XSSI_PREFIX + json.dumps(data))


class BuildInfoHandler(ColabAPIHandler):
    """`GET /api/colab/build-info`: the probe Colab sends before connecting."""

    @web.authenticated
    @authorized
    def get(self) -> None:
        """Return the release tag, from COLAB_RELEASE_TAG as in Colab's image."""
        self.finish_xssi({"release_tag": os.environ.get("COLAB_RELEASE_TAG")})


class ResourcesHandler(ColabAPIHandler):
    """`GET /api/colab/resources`: the figures behind Colab's RAM / Disk / GPU gauges."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Return memory (with per-kernel use), disks and GPUs."""
        app = self.app
        stats = await resource_stats(self.kernel_manager, app.disk_path(), app.nvidia_smi)
        self.finish_xssi(stats)


class DriveHandler(ColabAPIHandler):
    """`GET /api/colab/drive`: Drive mount errors; there is no Drive mount off Colab."""

    @web.authenticated
    @authorized
    def get(self) -> None:
        """Return an empty error list."""
        self.finish_xssi({"dfs": []})


#: (path under base_url, handler) pairs; Colab calls these paths without a prefix.
COLAB_HANDLERS: list[tuple[str, type[ColabAPIHandler]]] = [
    (r"/api/colab/build-info", BuildInfoHandler),
    (r"/api/colab/resources", ResourcesHandler),
    (r"/api/colab/drive", DriveHandler),
]
