"""Host and user names are checked as OpenSSH 9.6+ checks them, before ~/.ssh/config is read
(issue 10, item 6): a host string never reaches a shell through `%h` in ProxyCommand or
`Match exec`, and `--accept-new-host-key` never writes a wildcard known_hosts entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from jupyter_colab_remote.companion.errors import CompanionError
from jupyter_colab_remote.companion.ssh_target import split_spec
from tests.harness.companion import companion_env, error_line, run_cli

BAD_HOSTS = [
    "gpu;touch${IFS}/tmp/x;",
    "gpu$(id)",
    "gpu`id`",
    "gpu|id",
    "gpu,*",
    "*",
    "gpu?",
    "!gpu",
    "-oProxyCommand=id",
    "gpu box",
    "gpu\x1b]52;c;aGk=\x07",
]


@pytest.mark.parametrize("host", BAD_HOSTS)
def test_bad_hosts_are_refused(host):
    with pytest.raises(CompanionError) as e:
        split_spec(host)
    assert e.value.exit_code == 2
    assert "\x1b" not in str(e.value)  # shown escaped, never raw on the terminal


@pytest.mark.parametrize("user", ["a;b", "-oX", "a b -c", "x\\", "$(id)"[1:] + ")", "a`b"])
def test_bad_users_are_refused(user):
    with pytest.raises(CompanionError):
        split_spec(f"{user}@gpu")


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("gpu-box", (None, "gpu-box", None)),
        ("me@gpu.example.org:2222", ("me", "gpu.example.org", 2222)),
        ("first.last@10.0.0.5", ("first.last", "10.0.0.5", None)),
        ("[::1]:22", (None, "::1", 22)),
        ("DOMAIN\\me@host", ("DOMAIN\\me", "host", None)),
    ],
)
def test_good_specs_still_parse(spec, expected):
    assert split_spec(spec) == expected


@pytest.mark.e2e
def test_a_hostile_host_never_reaches_proxy_command(tmp_path):
    """With `ProxyCommand ... %h` in ~/.ssh/config, the companion refuses the host in one
    line, exit 2, before the config is used: the injected command never runs."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    marker = tmp_path / "injected"
    (home / ".ssh/config").write_text("Host *\n    ProxyCommand nc %h 22\n")
    (home / ".ssh/known_hosts").write_text("")
    env = companion_env(home, tmp_path)
    for command in ("start", "doctor", "stop", "status"):
        res = run_cli(command, f"gpu;touch${{IFS}}{marker};", env=env)
        assert res.returncode == 2, (command, res.stderr)
        if command == "doctor":  # its report names the failed check
            assert "[FAIL] SSH config" in res.stdout and "invalid host" in res.stdout
        else:
            assert "invalid host" in error_line(res)
    res = run_cli("start", "gpu,*", "--accept-new-host-key", env=env)
    assert res.returncode == 2 and "invalid host" in error_line(res)
    assert not marker.exists()
    assert Path(home / ".ssh/known_hosts").read_text() == ""


@pytest.mark.e2e
@pytest.mark.parametrize("profile", ["../../etc", "a/b", ".hidden", "x" * 65, "a b"])
def test_profile_names_that_would_name_other_files_are_refused(tmp_path, profile):
    env = companion_env(tmp_path / "home", tmp_path)
    for command in (["start", "--profile", profile], ["stop", "gpu", "--profile", profile]):
        res = run_cli(*command, env=env)
        assert res.returncode == 2 and "invalid profile name" in error_line(res), res.stderr
