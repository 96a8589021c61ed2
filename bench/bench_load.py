"""Load through ONE companion tunnel: K kernels, each driven by its own WebSocket client.

Usage: python -m bench.bench_load [--kernels 50] [--executes 100] [--batch 5] [--gateway]

Needs root, /usr/sbin/sshd (tests/harness/sshd.py starts one on 127.0.0.1 from a temp config). The
companion (`python -m jupyter_colab_remote start ALIAS --port P --json`) runs with a fake
HOME that knows that sshd; its runtime is the "remote" side. With --gateway, the kernels run on
a local Jupyter Kernel Gateway (token in KG_AUTH_TOKEN; the companion gets
`--gateway-url` and the token from COLABREMOTE_GATEWAY_TOKEN).

1. one client alone: a kernel, warm-up, --executes round trips (execute_request ->
   execute_reply, the kernel's idle awaited untimed), kernel shut down. This also loads
   everything loaded lazily, so the baseline that follows is the steady state.
2. baseline: open file descriptors, RSS and threads of the runtime process and the companion.
3. --kernels kernels started through the tunnel, --batch at a time (each start bounded by
   --start-deadline overall); then one WebSocket client per kernel, all through the same
   tunnel: each connects and warms up (its first execute waits for its kernel to be ready);
   once all are ready, all do --executes timed round trips at once. Peaks sampled every 0.5 s.
4. the clients close, the kernels are shut down (batched); fds polled (bounded) until back
   within --fd-slack of the baseline; final fds / RSS / threads. Steps 3-4 run --rounds times:
   a leak grows round after round, a high-water mark (allocator arenas) does not.
   CPU use of each process group while the clients ran shows where the time goes.

Prints a table and, as its last line, one JSON object. Every process is stopped by PID.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # write no __pycache__ into the repository

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from tests.harness.load import companion_tunnel, run_load  # noqa: E402

MIB = 1024 * 1024


def print_report(r: dict) -> None:
    solo, conc = r["solo"], r["concurrent"]
    print(
        f"{r['kernels']} kernels x {r['executes']} executes through one companion tunnel"
        f"{' (kernels on a Kernel Gateway)' if r['gateway'] else ''}"
    )
    print(
        f"  kernels started in {r['start_s']} s (batches of {r['batch']}), all answering after "
        f"{r['ready_s']} s; timed phase {r['drive_s']} s ({r['executes_per_s']} executes/s); "
        f"shut down in {r['shutdown_s']} s"
    )
    print(
        f"  replies {r['replies']}/{r['expected_replies']}, client errors "
        f"{len(r['client_errors'])}, kernels left {r['kernels_left']}"
    )
    print("\nexecute round trip (ms)        n      p50      p90      p99     mean      max")
    for label, s in (("1 client alone", solo), (f"{r['kernels']} clients at once", conc)):
        print(
            f"  {label:<22} {s['n']:>6} {s['p50_ms']:>8.2f} {s['p90_ms']:>8.2f} "
            f"{s['p99_ms']:>8.2f} {s['mean_ms']:>8.2f} {s['max_ms']:>8.2f}"
        )
    print(
        f"  p50 ratio {conc['p50_ms'] / solo['p50_ms']:.1f}x, "
        f"p99 ratio {conc['p99_ms'] / solo['p99_ms']:.1f}x"
    )
    print("\nresources          baseline      peak     after   after-baseline")
    for name in ("runtime", "companion"):
        b, p, a = r["baseline"][name], r["peak"][name], r["after"][name]
        d = a["fds"] - b["fds"]
        print(f"  {name} fds       {b['fds']:>8} {p['fds']:>9} {a['fds']:>9} {d:>+10}")
        print(
            f"  {name} RSS MiB   {b['rss'] / MIB:>8.1f} {p['rss'] / MIB:>9.1f} "
            f"{a['rss'] / MIB:>9.1f} {(a['rss'] - b['rss']) / MIB:>+10.1f}"
        )
        print(
            f"  {name} threads   {b['threads']:>8} {p['threads']:>9} {a['threads']:>9} "
            f"{a['threads'] - b['threads']:>+10}"
        )
    restarts = r["rounds"][-1]["kernel_restarts_so_far"]
    print(f"  kernel restarts in the runtime's log (port collisions at start-up): {restarts}")
    print(f"\nCPU while all clients ran (% of one core; the machine has {r['cpus']} cores)")
    print("  " + ", ".join(f"{k} {v}" for k, v in r["cpu_percent"].items()))
    if len(r["rounds"]) > 1:
        print(
            "\nround  p50 ms  p99 ms  runtime fds / RSS MiB after   companion fds / RSS MiB after"
        )
        for i, rd in enumerate(r["rounds"], 1):
            c, rt, co = rd["concurrent"], rd["after"]["runtime"], rd["after"]["companion"]
            print(
                f"  {i:<4} {c['p50_ms']:>7.1f} {c['p99_ms']:>7.1f}  {rt['fds']:>11} / "
                f"{rt['rss'] / MIB:>6.1f}            {co['fds']:>9} / {co['rss'] / MIB:>6.1f}"
            )
    for rd in r["rounds"]:
        for err in rd["client_errors"][:5]:
            print(f"  client error: {err}")
        for line in rd.get("runtime_log_problems", []):
            print(f"  runtime log: {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", type=int, default=50)
    parser.add_argument("--executes", type=int, default=100, help="timed round trips per client")
    parser.add_argument("--warmup", type=int, default=5, help="untimed round trips per client")
    parser.add_argument("--batch", type=int, default=5, help="kernels starting at once")
    parser.add_argument("--start-deadline", type=float, default=900.0)
    parser.add_argument("--fd-slack", type=int, default=8)
    parser.add_argument("--gateway", action="store_true", help="kernels on a Kernel Gateway")
    parser.add_argument(
        "--rounds", type=int, default=2, help="load rounds (a leak grows round after round)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmpdir:
        tmp = Path(tmpdir)
        with contextlib.ExitStack() as stack:
            url = token = gateway_pid = None
            if args.gateway:
                from tests.harness.gateway import kernel_gateway

                gw = stack.enter_context(kernel_gateway(tmp / "gateway"))
                url, token, gateway_pid = gw.url, gw.token, gw.pid
            tunnel = stack.enter_context(companion_tunnel(tmp, url, token))
            result = run_load(
                tunnel,
                args.kernels,
                args.executes,
                warmup=args.warmup,
                batch=args.batch,
                start_deadline=args.start_deadline,
                fd_slack=args.fd_slack,
                rounds=args.rounds,
                gateway_pid=gateway_pid,
            )
    result.update(
        bench="load",
        batch=args.batch,
        gateway=args.gateway,
        cpus=os.cpu_count(),
        python=platform.python_version(),
    )
    print_report(result)
    print(json.dumps(result, sort_keys=True))
    ok = all(
        not rd["client_errors"] and rd["replies"] == rd["expected_replies"]
        for rd in result["rounds"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
