"""Shared fixtures: an in-process jupyter_server configured as `jupyter colabremote serve` does."""

from __future__ import annotations

import pytest

from jupyter_colab_remote.extension.app import COLAB_SERVER_CONFIG
from jupyter_colab_remote.tokens import TokenStore

pytest_plugins = ["pytest_jupyter.jupyter_server", "tests.harness.fixtures"]


@pytest.fixture
def token_file(tmp_path):
    """A fresh token store path for one test."""
    return tmp_path / "store" / "tokens.json"


@pytest.fixture
def token_store(token_file):
    """The test's token store, as the CLI would open it."""
    return TokenStore(token_file)


@pytest.fixture
def token(token_store):
    """A live token named 'test' in the store."""
    return token_store.create("test")


@pytest.fixture
def jp_server_config(token_file):
    """The server settings `serve` applies, plus the test's token store."""
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_colab_remote": True},
            **COLAB_SERVER_CONFIG,
        },
        "ColabRemoteApp": {"token_file": str(token_file)},
    }


@pytest.fixture
def jp_auth_header(token):
    """pytest-jupyter's requests authenticate with our store's token."""
    return {"Authorization": f"token {token}"}


@pytest.fixture
def colab_app(jp_serverapp):
    """The loaded ColabRemoteApp instance."""
    return jp_serverapp.extension_manager.extension_apps["jupyter_colab_remote"].copy().pop()
