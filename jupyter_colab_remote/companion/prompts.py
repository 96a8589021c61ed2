"""Password and passphrase prompts, asked at most once per run."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys

from .errors import AuthError


class Prompter:
    """Asks the user for secrets: on the terminal, or through SSH_ASKPASS as OpenSSH does.

    Answers are kept in memory for the run, so reconnecting after an outage never asks
    again for the same secret.
    """

    def __init__(self, interactive: bool | None = None) -> None:
        self.interactive = sys.stdin.isatty() if interactive is None else interactive
        self._answers: dict[str, str] = {}
        self.asked = 0

    def ask(self, key: str, prompt: str) -> str:
        """Return the secret for `key`, asking once (prompt shown to the user)."""
        if key in self._answers:
            return self._answers[key]
        answer = self._ask(prompt)
        self._answers[key] = answer
        return answer

    def forget(self, key: str) -> None:
        """Drop a cached answer that turned out to be wrong."""
        self._answers.pop(key, None)

    def _ask(self, prompt: str) -> str:
        askpass = os.environ.get("SSH_ASKPASS")
        force = os.environ.get("SSH_ASKPASS_REQUIRE") == "force"
        self.asked += 1
        if askpass and (force or not self.interactive):
            try:
                out = subprocess.run(
                    [askpass, prompt], capture_output=True, text=True, timeout=120, check=True
                )
            except (OSError, subprocess.SubprocessError) as e:
                raise AuthError(f"SSH_ASKPASS program {askpass!r} failed: {e}") from e
            return out.stdout.rstrip("\n")
        if not self.interactive:
            raise AuthError(
                f"{prompt.strip().rstrip(':')} needed, but there is no terminal to ask on "
                "(use an SSH key or agent, or set SSH_ASKPASS)"
            )
        return getpass.getpass(prompt)
