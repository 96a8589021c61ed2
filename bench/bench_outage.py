"""How fast the companion notices a cut link, with and without TCP_USER_TIMEOUT, in one run.

Usage: python -m bench.bench_outage [--runs 3] [--outage 8]

Needs root, /usr/sbin/sshd, `ip`/`nsenter`. For each variant, a fresh sshd inside a network
namespace (`remote_host_netns`), a companion attached to it (`start ALIAS --json`, fake HOME),
then `--runs` cuts of the link (`ip link set DEV down`) for `--outage` seconds each
(bench_companion.measure_recovery): seconds from the cut until the companion reports the
loss, and from link-up until the same URL answers an authenticated request again.

Variants:
- `linux`: this machine as it is: TCP_USER_TIMEOUT (4 s) and the SSH-level liveness check
  (ServerAliveInterval 1 x ServerAliveCountMax 4, the defaults);
- `no-tcp-user-timeout`: the companion in a macOS-like interpreter (socket.TCP_USER_TIMEOUT
  removed by tests/harness/foreign_os.py), so only the SSH-level check can notice: what
  macOS and Windows laptops get;
- `tcp-user-timeout-only`: `--server-alive-interval 0` (the check off; paramiko's send-only
  keepalive every second): the companion's behaviour before the check existed, on Linux.
  (Without both, as macOS and Windows were before, the loss is noticed only when the OS
  gives up on the connection, minutes later: not measured.)

Every process is stopped by PID; every wait has a deadline. Prints a table, then one JSON
line.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # write no __pycache__ into the repository

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import paramiko  # noqa: E402

from bench.bench_companion import STARTED, measure_recovery, med  # noqa: E402
from tests.harness.companion import companion_env  # noqa: E402
from tests.harness.foreign_os import foreign_os_env  # noqa: E402
from tests.harness.ssh_client import SSHClientFiles  # noqa: E402

VARIANTS = ("linux", "no-tcp-user-timeout", "tcp-user-timeout-only")


def variant_env(tmp: Path, variant: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """The companion's environment (its own HOME and Jupyter dirs) and extra options."""
    env = companion_env(tmp / "home", tmp / "local", PYTHONDONTWRITEBYTECODE="1")
    if variant == "no-tcp-user-timeout":
        return foreign_os_env(env, tmp / "site", "macos"), ()
    if variant == "tcp-user-timeout-only":
        return env, ("--server-alive-interval", "0")
    return env, ()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="link cuts per variant")
    parser.add_argument("--outage", type=float, default=8.0, help="seconds the link is down")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args(argv)
    result: dict[str, object] = {"bench": "outage", "outage_s": args.outage, "variants": {}}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-outage-") as tmpdir:
            for variant in args.variants.split(","):
                tmp = Path(tmpdir) / variant
                env, extra = variant_env(tmp, variant)
                files = SSHClientFiles(tmp / "client")
                try:
                    rec = measure_recovery(tmp, files, env, args.runs, args.outage, extra)
                finally:
                    files.close()
                result["variants"][variant] = rec  # type: ignore[index]
    finally:
        for c in STARTED:
            c.stop()
    print(f"link cut for {args.outage:.0f} s (netns), {args.runs} runs per variant")
    print(f"  {'variant':<24} {'detected after the cut (s)':<34} {'URL back after link-up (s)'}")
    for variant, rec in result["variants"].items():  # type: ignore[union-attr]
        print(
            f"  {variant:<24} {str(rec['detect_s']):<24} med {med(rec['detect_s']):<5}"
            f"  {rec['url_back_s']} med {med(rec['url_back_s'])}"
        )
    result.update(python=platform.python_version(), paramiko=paramiko.__version__)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
