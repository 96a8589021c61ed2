"""The own-wheel check compares versions as pip does, not as strings."""

from __future__ import annotations

from jupyter_colab_remote.companion.wheels import same_version


def test_prerelease_spellings_are_the_same_version():
    """package.json spells a prerelease "0.2.0-alpha.1"; the wheel's metadata "0.2.0a1"."""
    assert same_version("0.2.0-alpha.1", "0.2.0a1")
    assert same_version("0.1.0", "0.1.0")
    assert not same_version("0.2.0a1", "0.2.0")
    assert not same_version("0.1.0", "0.1.1")
