"""Text a compromised server sends never reaches the laptop's terminal raw (issue 10, item 8).

The "compromised server" is a real sshd whose agent is replaced by a script (named with
--remote-python) that answers with escape sequences: OSC 52 (writes the user's clipboard, the
thing they paste into Colab), a cursor move and a bidi override, in a progress line, in the
JSON error, and on stderr. The companion must show them escaped, exit with the agent's error,
and never print an ESC/BEL byte.
"""

from __future__ import annotations

import json

import pytest

from tests.harness.companion import companion_env, error_line, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.needs_root]

OSC52 = "\x1b]52;c;aGk=\x07"
HOSTILE = f"{OSC52}\x1b[2Aevil\u202etxt"


def hostile_agent(path, mode: str) -> str:
    """A --remote-python stand-in that answers every agent call with hostile text."""
    answer = json.dumps({"ok": False, "error": f"boom {HOSTILE}", "exit_code": 1})
    if mode == "json":
        body = (
            f"printf '%s\\n' {json.dumps('colabremote-progress: pulling ' + HOSTILE)!r} >&2\n"
            f"printf '%s\\n' '{answer}'\n"
        )
    else:  # no JSON: the companion shows the last stderr line
        body = f"printf 'crash %s\\n' '{HOSTILE}' >&2\nexit 3\n"
    path.write_text("#!/bin/sh\ncat >/dev/null\n" + body)
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("mode", ["json", "stderr"])
def test_escape_sequences_from_the_server_are_shown_escaped(
    tmp_path, sshd_server, ssh_client_files, mode
):
    env = companion_env(ssh_client_files.make_home(tmp_path / "home"), tmp_path)
    agent = hostile_agent(tmp_path / "evil-python", mode)
    for command in (["start", "gpu-box"], ["status", "gpu-box"], ["doctor", "gpu-box"]):
        res = run_cli(*command, "--remote-python", agent, env=env)
        assert res.returncode != 0, (command, res.stdout, res.stderr)
        out = res.stdout + res.stderr
        for raw in ("\x1b", "\x07", "\u202e"):
            assert raw not in out, (command, out)
        assert "\\x1b]52;c;aGk=\\x07" in out, (command, out)
        if command[0] != "doctor":
            assert "\\u202e" in error_line(res)
