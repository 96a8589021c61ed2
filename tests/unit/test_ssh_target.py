"""Target parsing: `[user@]host[:port]` through an ssh_config given as text, as OpenSSH reads it."""

from __future__ import annotations

import paramiko
import pytest

from jupyter_colab_remote.companion.errors import CompanionError
from jupyter_colab_remote.companion.ssh_target import resolve, split_spec

CONFIG = """
Host gpu-box
    HostName 10.0.0.7
    Port 2222
    User alice
    IdentityFile ~/.ssh/gpu_key
    IdentitiesOnly yes
    UserKnownHostsFile ~/.ssh/known_gpu /etc/ssh/known_extra

Host inner
    HostName inner.internal
    ProxyJump bastion,gpu-box

Host bastion
    HostName bastion.example.org
    User jump

Host via-command
    HostName hidden
    ProxyCommand nc %h %p

Host loop-a
    ProxyJump loop-b
Host loop-b
    ProxyJump loop-a

Host *
    User fallback
"""


@pytest.fixture
def config(tmp_path, monkeypatch):
    """The config above, and a HOME in tmp_path (for `~` and the default files)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    return paramiko.SSHConfig.from_text(CONFIG)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("host", (None, "host", None)),
        ("me@host", ("me", "host", None)),
        ("me@host:2200", ("me", "host", 2200)),
        ("[::1]:2200", (None, "::1", 2200)),
        ("::1", (None, "::1", None)),
        ("a@b@host", ("a@b", "host", None)),
    ],
)
def test_split_spec(spec, expected):
    """User, host and port come apart as OpenSSH's `ssh user@host -p port` would take them."""
    assert split_spec(spec) == expected


@pytest.mark.parametrize(
    "spec, message",
    [
        ("@host", "empty user name"),
        ("host:0", "invalid port '0'"),
        ("host:65536", "invalid port '65536'"),
        ("host:ssh", "invalid port 'ssh'"),
        ("-oProxyCommand=x", "invalid host"),
        ("two words", "invalid host"),
        ("", "invalid host"),
    ],
)
def test_bad_specs_are_one_line_errors(spec, message):
    """Bad input is a CompanionError naming what is wrong (never an option for ssh)."""
    with pytest.raises(CompanionError, match=message):
        split_spec(spec)


def test_alias_takes_hostname_port_user_keys_and_known_hosts(config, tmp_path):
    """Every setting of the Host block applies; a `~` expands to HOME."""
    t = resolve("gpu-box", config)
    assert (t.alias, t.hostname, t.port, t.user) == ("gpu-box", "10.0.0.7", 2222, "alice")
    assert t.identity_files == [f"{tmp_path}/.ssh/gpu_key"] and t.identities_only
    assert t.known_hosts_files == [f"{tmp_path}/.ssh/known_gpu", "/etc/ssh/known_extra"]
    assert t.known_hosts_name == "[10.0.0.7]:2222"
    assert t.describe() == "alice@10.0.0.7:2222"


def test_command_line_user_and_port_win_over_the_config(config):
    """`bob@gpu-box:2200` overrides User and Port, as OpenSSH's command line does."""
    t = resolve("bob@gpu-box:2200", config)
    assert (t.hostname, t.port, t.user) == ("10.0.0.7", 2200, "bob")


def test_unknown_host_gets_defaults(config, tmp_path):
    """A host not in the config: itself, port 22, `Host *`'s user, ~/.ssh's existing keys."""
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_rsa").write_text("")
    t = resolve("plain.example.org", config)
    assert (t.hostname, t.port, t.user) == ("plain.example.org", 22, "fallback")
    assert t.identity_files == [f"{tmp_path}/.ssh/id_rsa"]
    assert t.known_hosts_files == [f"{tmp_path}/.ssh/known_hosts"]
    assert t.known_hosts_name == "plain.example.org" and t.proxy_jump == []


def test_proxyjump_chain_resolves_each_hop(config):
    """ProxyJump `bastion,gpu-box`: two hops, each resolved through the config itself."""
    t = resolve("inner", config)
    assert t.hostname == "inner.internal"
    assert [(h.alias, h.hostname, h.user) for h in t.proxy_jump] == [
        ("bastion", "bastion.example.org", "jump"),
        ("gpu-box", "10.0.0.7", "alice"),
    ]
    assert t.proxy_command is None


def test_proxycommand_is_kept(config):
    """A ProxyCommand (and no ProxyJump) is passed on as written (paramiko expands %h/%p)."""
    assert resolve("via-command", config).proxy_command == "nc hidden 22"


def test_proxyjump_loop_is_an_error(config):
    """Two hosts that jump through each other end in a one-line error, not a recursion."""
    with pytest.raises(CompanionError, match="ProxyJump chain is too long"):
        resolve("loop-a", config)
