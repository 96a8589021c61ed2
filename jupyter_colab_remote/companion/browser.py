"""`start --open`: open Colab in the browser, when one can start without taking the terminal."""

from __future__ import annotations

import os
import sys
import webbrowser

from .ui import UI

COLAB_URL = "https://colab.research.google.com/"


def _has_gui_browser() -> bool:
    """Whether a browser can open without taking over this terminal: $BROWSER is set, or not
    Linux/BSD, or there is a display (webbrowser would otherwise start lynx or w3m here)."""
    if os.environ.get("BROWSER") or not sys.platform.startswith(("linux", "freebsd", "openbsd")):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_colab(ui: UI) -> None:
    """Open Colab in the browser (--open); say so when no browser could be started."""
    opened = False
    if _has_gui_browser():
        try:
            opened = webbrowser.open(COLAB_URL)
        except (webbrowser.Error, OSError):
            pass
    if not opened:
        ui.info(f"could not open a browser here; open {COLAB_URL} yourself")
