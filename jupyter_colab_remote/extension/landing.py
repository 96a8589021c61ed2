"""`GET /colabremote`: a page for people who open the runtime's URL in a browser.

Without JupyterLab the runtime's URL would otherwise land on raw JSON. The page says what
this server is, how to use the URL, and whether a kernel can run; it is self-contained (no
external assets), never shows the token, and asks the browser not to send the address (which
holds the token) as a Referer.
"""

from __future__ import annotations

import importlib.util
import shlex
import sys
import typing as t
from html import escape

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from .. import __version__
from . import kernel_check
from .gateway import gateway_client
from .token_handlers import AUTH_RESOURCE

if t.TYPE_CHECKING:
    from .app import ColabRemoteApp

LANDING_PATH = "/colabremote"

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Colab local runtime</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; max-width: 44em; margin: 2em auto;
  padding: 0 1em; color: #202124; }}
h1 {{ font-size: 1.5em; margin-bottom: .2em; }}
code {{ background: #f1f3f4; padding: .1em .3em; border-radius: 3px; }}
.muted {{ color: #5f6368; }}
.warn {{ border-left: 4px solid #e37400; background: #fef7e0; padding: .5em 1em; }}
</style>
</head>
<body>
<h1>Colab local runtime</h1>
<p class="muted">jupyter-colab-remote {version} &middot; {kernels}</p>
{warning}
<p>This Jupyter server is a <b>Google Colab local runtime</b>. To use it, open a notebook in
Colab, choose <b>Connect &#9656; Connect to a local runtime</b> and paste the URL with the
token, <code>{example}</code>, exactly as <code>jupyter colabremote serve</code> (or
<code>jupyter colabremote start</code>) printed it.</p>
<p>Lost the URL? Get one with a fresh token on the runtime's machine:
<code>jupyter colabremote token rotate NAME</code> (<code>jupyter colabremote token list</code>
shows the names).</p>
{lab}
<p>Machine-readable status: <a href="{status}">{status}</a></p>
</body>
</html>
"""


def jupyterlab_loaded(serverapp: t.Any) -> bool:
    """Whether JupyterLab serves /lab here: installed, and enabled as a server extension."""
    manager = getattr(serverapp, "extension_manager", None)
    if manager is None:
        return importlib.util.find_spec("jupyterlab") is not None
    package = manager.extensions.get("jupyterlab")
    return bool(package and package.enabled)


def lab_paragraph(serverapp: t.Any, base: str) -> str:
    """A link to JupyterLab when it is there, else how to add it."""
    if jupyterlab_loaded(serverapp):
        lab = escape(f"{base}lab")
        return f'<p>JupyterLab on this runtime: <a href="{lab}">{lab}</a></p>'
    command = f"{shlex.quote(sys.executable)} -m pip install 'jupyter-colab-remote[lab]'"
    return (
        "<p>For a notebook interface in this browser, install JupyterLab into the runtime's "
        f"environment (<code>{escape(command)}</code>) and restart the runtime.</p>"
    )


class LandingHandler(ExtensionHandlerMixin, JupyterHandler):
    """The runtime's page for a browser (the default URL when JupyterLab is absent)."""

    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Render the page: version, running kernels, how to connect Colab, the status link."""
        app = t.cast("ColabRemoteApp", self.extensionapp)
        count = len(self.kernel_manager.list_kernel_ids())
        kernels = f"{count} kernel{'' if count == 1 else 's'} running"
        local = gateway_client(self.serverapp) is None
        available = await kernel_check.availability(
            self.kernel_spec_manager, self.kernel_manager.default_kernel_name, local
        )
        warning = ""
        if available["advice"]:
            warning = f'<p class="warn">{escape(available["advice"])}</p>'
        base = self.base_url
        example = f"http://localhost:{app.colab_port()}{base}?token=…"
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-store")
        self.finish(
            PAGE.format(
                version=escape(__version__),
                kernels=escape(kernels),
                warning=warning,
                example=escape(example),
                lab=lab_paragraph(self.serverapp, base),
                status=escape(f"{base}colabremote/api/status"),
            )
        )


LANDING_HANDLERS = [(rf"{LANDING_PATH}/?", LandingHandler)]
