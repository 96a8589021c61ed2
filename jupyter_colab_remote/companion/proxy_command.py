"""ProxyCommand as a socket-like object paramiko can run SSH over, on every OS.

paramiko's own ProxyCommand waits for output with select() on the command's stdout pipe,
which Windows does not allow (select works on sockets only there). Here a thread reads the
pipe instead, and `recv` waits on a condition with the transport's timeout. The command
runs without a shell, as paramiko runs it: split with shlex on POSIX; on Windows the
command line goes to CreateProcess as written (shlex would eat the backslashes of
`C:\\...\\ssh.exe`).
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import threading

from paramiko.ssh_exception import ProxyCommandFailure

from .. import files

#: How much of the command's stderr is kept for the error message.
STDERR_TAIL = 2000


class ProxyCommand:
    """The command's stdin and stdout as a socket: send, recv (with settimeout), close."""

    def __init__(self, command_line: str) -> None:
        self.command_line = command_line
        argv: str | list[str] = command_line if files.WINDOWS else shlex.split(command_line)
        try:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
            )
        except (OSError, ValueError) as e:
            raise ProxyCommandFailure(command_line, str(e)) from e
        self.timeout: float | None = None
        self.closed = False
        self._buffer = bytearray()
        self._eof = False
        self._stderr = b""
        self._cond = threading.Condition()
        threading.Thread(target=self._read_stdout, name="proxy-stdout", daemon=True).start()
        threading.Thread(target=self._read_stderr, name="proxy-stderr", daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        while True:
            try:
                chunk = self.process.stdout.read(65536)
            except (OSError, ValueError):
                chunk = b""
            with self._cond:
                if chunk:
                    self._buffer += chunk
                else:
                    self._eof = True
                self._cond.notify_all()
            if not chunk:
                return

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        with contextlib.suppress(OSError, ValueError):
            while chunk := self.process.stderr.read(4096):
                self._stderr = (self._stderr + chunk)[-STDERR_TAIL:]

    def send(self, content: bytes) -> int:
        """Write to the command's stdin."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(content)
            self.process.stdin.flush()
        except (OSError, ValueError) as e:
            raise ProxyCommandFailure(self.command_line, self._why(e)) from e
        return len(content)

    def recv(self, size: int) -> bytes:
        """Up to `size` bytes of the command's output; TimeoutError (socket.timeout) after
        `timeout` without any (paramiko polls this way); b"" once the command has ended."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._buffer or self._eof, self.timeout):
                raise TimeoutError()  # socket.timeout, which paramiko polls on
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
        return data

    def _why(self, error: Exception) -> str:
        tail = self._stderr.decode(errors="replace").strip().splitlines()
        return tail[-1] if tail else str(error)

    def settimeout(self, timeout: float | None) -> None:
        """How long recv waits (None: until output or the end)."""
        self.timeout = timeout

    def close(self) -> None:
        """End the command."""
        self.closed = True
        with contextlib.suppress(OSError):
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()

    @property
    def _closed(self) -> bool:
        # paramiko's Transport reads this name when it stops.
        return self.closed
