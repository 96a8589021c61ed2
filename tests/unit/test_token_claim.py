"""The agent's token claim (register_token): keep, create, or reissue under a new name."""

from __future__ import annotations

import time

import pytest

from jupyter_colab_remote.agent.actions import AgentError, register_token
from jupyter_colab_remote.tokens import TokenStore, new_secret

#: The companion's saved secret and its fresh fallback (full-strength, as the store requires).
S1, F1, OTHER = new_secret(), new_secret(), new_secret()


@pytest.fixture
def store(tmp_path):
    """A fresh token store in tmp_path."""
    return TokenStore(tmp_path / "tokens.json")


def claim(store: TokenStore, **request) -> dict:
    """register_token on the store's file."""
    return register_token(store.path, request)


def test_first_time_token_is_created_then_kept(store):
    """A new name with its secret is registered; the same secret later is simply kept."""
    request = {"token": S1, "token_name": "laptop", "fallback_token": F1}
    assert claim(store, **request) == {"token_name": "laptop", "token_reissued": False}
    assert store.verify(S1).name == "laptop"
    again = claim(store, **request, token_known=True)
    assert again == {"token_name": "laptop", "token_reissued": False}
    assert store.verify(F1) is None  # the fallback was not needed


def test_rotated_token_is_not_revived(store):
    """Rotated here: the rotated secret stays with its user, ours is reissued under a new name."""
    claim(store, token=S1, token_name="laptop")
    rotated = store.rotate("laptop")
    answer = claim(store, token=S1, token_name="laptop", token_known=True, fallback_token=F1)
    assert answer == {"token_name": "laptop-2", "token_reissued": True}
    assert store.verify(S1) is None
    assert store.verify(rotated).name == "laptop"
    assert store.verify(F1).name == "laptop-2"


def test_revoked_token_is_reissued_under_the_same_name(store):
    """Revoked here (its name is free): the fallback takes the name, the old secret stays dead."""
    claim(store, token=S1, token_name="laptop")
    store.revoke("laptop")
    answer = claim(store, token=S1, token_name="laptop", token_known=True, fallback_token=F1)
    assert answer == {"token_name": "laptop", "token_reissued": True}
    assert store.verify(S1) is None and store.verify(F1).name == "laptop"


def test_expired_token_is_replaced_under_the_same_name(store):
    """An expired record is removed and the fallback registered under its name."""
    store.create("laptop", expires_in=0.01, secret=S1)
    time.sleep(0.05)
    answer = claim(store, token=S1, token_name="laptop", token_known=True, fallback_token=F1)
    assert answer == {"token_name": "laptop", "token_reissued": True}
    assert store.verify(F1).name == "laptop"


def test_taken_names_are_skipped(store):
    """The new name is the first `NAME-N` not taken."""
    claim(store, token=S1, token_name="laptop")
    store.create("laptop-2")
    store.rotate("laptop")
    answer = claim(store, token=S1, token_name="laptop", token_known=True, fallback_token=F1)
    assert answer["token_name"] == "laptop-3"


def test_without_fallback_a_rotation_is_an_error(store):
    """A known token that was revoked, and no fallback to offer: a one-line error."""
    store.create("laptop", secret=OTHER)
    with pytest.raises(AgentError, match="rotated or revoked here; run start again"):
        claim(store, token=S1, token_name="laptop", token_known=True)


def test_no_token_in_the_request_claims_nothing(store):
    """No token or no name: nothing is registered."""
    assert claim(store, token_name="laptop") == {} == claim(store, token=S1)
    assert store.records() == []
