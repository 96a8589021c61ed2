"""The package layout: one subpackage per process, and the companion never loads the server's."""

from __future__ import annotations

import json
import subprocess
import sys

#: Imports every companion module in a fresh interpreter and lists what got loaded.
PROBE = """
import json, pkgutil, importlib, sys
import jupyter_colab_remote.companion as c
for m in pkgutil.iter_modules(c.__path__):
    importlib.import_module(f"{c.__name__}.{m.name}")
print(json.dumps(sorted(sys.modules)))
"""


def test_companion_imports_neither_the_extension_nor_jupyter_server():
    """The laptop side runs without jupyter_server: none of the extension or agent is loaded."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    loaded = json.loads(out)
    assert "jupyter_colab_remote.companion.cli" in loaded  # the probe did import the companion
    offending = [
        m
        for m in loaded
        if m.split(".")[0] == "jupyter_server"
        or m.startswith(("jupyter_colab_remote.extension", "jupyter_colab_remote.agent"))
    ]
    assert offending == []
