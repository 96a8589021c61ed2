"""What the runtime's port watcher (extension/listening_ports.py) costs, idle and on a change.

Usage: python -m bench.bench_port_watch [--kernels 0,1,10] [--sockets 0,20000]
       [--processes 0,1000] [--seconds 5]

Real processes and sockets, a stand-in kernel manager: N "kernels" are python processes, each
holding six listening TCP sockets (like ipykernel's five ZMQ channels and IOPub pipe), twenty
socketpairs and one child process with two sockets of its own; M "unrelated" sockets are
loopback TCP connections held by other processes (M entries in /proc/net/tcp, as on a busy
server); P unrelated processes are `sleep` processes (the watcher lists /proc's pids each
round to find a kernel's processes that left its tree). The watcher only needs the kernels'
pids, so the kernel manager is a small object answering list_kernel_ids / get_kernel (the
real one needs a Jupyter server; the figures are the watcher's own).

For each (N, M, P) it reports, as CPU time of this process:
- idle: the watcher's rounds at its real pace (one per WATCH_INTERVAL) for --seconds while
  nothing changes, as CPU ms per second of watching and % of one core;
- change: one round right after a kernel opened a socket (the round that reads the TCP
  tables), in ms;
- naive: one `psutil.net_connections()` (every socket of the machine, what a simple poller
  runs each round), in ms.
Ratios: idle with M sockets and P processes vs none (the idle cost must not grow with the
server's sockets, and little with its processes),
and naive vs idle per round. Prints a table, then one JSON line. Every process is stopped by
PID.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # write no __pycache__ into the repository

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402

import psutil  # noqa: E402

from jupyter_colab_remote.extension.listening_ports import (  # noqa: E402
    PENDING_ROUNDS,
    WATCH_INTERVAL,
    PortWatcher,
)

KERNEL = r"""
import socket, subprocess, sys, time
listeners = []
for _ in range(6):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); listeners.append(s)
pairs = [socket.socketpair() for _ in range(20)]
child = subprocess.Popen([sys.executable, "-c",
    "import socket, time; a = socket.socketpair(); time.sleep(3600)"])
print(" ".join(str(s.getsockname()[1]) for s in listeners[:5]), flush=True)
extra = []
for line in sys.stdin:  # "open": one more socket (a change for the watcher)
    c = socket.create_connection(("127.0.0.1", listeners[5].getsockname()[1])); extra.append(c)
    print("ok", flush=True)
child.kill()
"""

UNRELATED = r"""
import resource, socket, sys, time
n = int(sys.argv[1])
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(4096)
held = []
for _ in range(n // 2):
    c = socket.create_connection(srv.getsockname()); a, _ = srv.accept(); held += [c, a]
print("ready", flush=True)
time.sleep(3600)
"""


#: Unrelated sockets per holding process (its fd limit may not be raised in a container).
SOCKETS_PER_PROCESS = 8000


class StandInKernelManager:
    """list_kernel_ids / get_kernel over real processes (see the module docstring)."""

    def __init__(self, kernels: list[tuple[subprocess.Popen, list[int]]]) -> None:
        self.kernels = {
            f"k{i}": types.SimpleNamespace(
                provisioner=types.SimpleNamespace(pid=p.pid),
                kernel_name="python3",
                **dict(
                    zip(
                        ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port"),
                        ports,
                        strict=True,
                    )
                ),
            )  # fmt: skip
            for i, (p, ports) in enumerate(kernels)
        }

    def list_kernel_ids(self) -> list[str]:
        """The kernel ids."""
        return list(self.kernels)

    def get_kernel(self, kid: str) -> types.SimpleNamespace:
        """A kernel's manager stand-in."""
        return self.kernels[kid]


def cpu() -> float:
    """This process's CPU seconds."""
    return time.process_time()


def measure(n_kernels: int, n_sockets: int, n_processes: int, seconds: float) -> dict:
    """Idle, change and naive figures for N kernels, M unrelated sockets, P processes."""
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(n_processes):
            procs.append(subprocess.Popen(["sleep", "3600"]))
        for i in range(0, n_sockets, SOCKETS_PER_PROCESS):
            n = min(SOCKETS_PER_PROCESS, n_sockets - i)
            u = subprocess.Popen([sys.executable, "-c", UNRELATED, str(n)],
                                 stdout=subprocess.PIPE, text=True)  # fmt: skip
            procs.append(u)
            assert u.stdout is not None and u.stdout.readline().strip() == "ready"
        kernels = []
        for _ in range(n_kernels):
            k = subprocess.Popen([sys.executable, "-c", KERNEL], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)  # fmt: skip
            procs.append(k)
            assert k.stdout is not None
            kernels.append((k, [int(x) for x in k.stdout.readline().split()]))
        time.sleep(0.3)  # the kernels' children are up
        watcher = PortWatcher(StandInKernelManager(kernels))
        watcher.scan()  # the first round reads the tables and learns each kernel's own ports
        assert watcher.ports == [], watcher.ports
        for _ in range(PENDING_ROUNDS + 1):  # sockets new in the first round settle
            watcher.scan()
        reads = watcher.table_reads
        rounds = 0
        c0, end = cpu(), time.monotonic() + seconds
        while time.monotonic() < end:
            watcher.scan()
            rounds += 1
            time.sleep(WATCH_INTERVAL)
        idle_cpu = cpu() - c0
        assert watcher.table_reads == reads, "an idle round read the TCP tables"
        per_round = idle_cpu / rounds
        change = None
        if kernels:
            k, _ = kernels[0]
            assert k.stdin is not None and k.stdout is not None
            k.stdin.write("open\n")
            k.stdin.flush()
            assert k.stdout.readline().strip() == "ok"
            c0 = cpu()
            watcher.scan()
            change = cpu() - c0
            assert watcher.table_reads == reads + 1
        c0 = cpu()
        psutil.net_connections("tcp")
        naive = cpu() - c0
        return {
            "kernels": n_kernels,
            "sockets": n_sockets,
            "processes": n_processes,
            "rounds": rounds,
            "idle_ms_per_s": round(per_round / WATCH_INTERVAL * 1000, 3),
            "idle_core_percent": round(per_round / WATCH_INTERVAL * 100, 3),
            "idle_round_ms": round(per_round * 1000, 3),
            "change_round_ms": None if change is None else round(change * 1000, 3),
            "naive_round_ms": round(naive * 1000, 3),
        }
    finally:
        for p in procs:
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(p.pid).children(recursive=True):
                    child.kill()
            p.kill()
            p.wait(10)


def main() -> None:
    """Run the matrix and print the table and the JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", default="0,1,10")
    ap.add_argument("--sockets", default="0,20000")
    ap.add_argument("--processes", default="0,1000")
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    rows = [
        measure(int(n), int(m), int(p), args.seconds)
        for n in args.kernels.split(",")
        for m in args.sockets.split(",")
        for p in args.processes.split(",")
    ]
    base = {r["kernels"]: r for r in rows if r["sockets"] == 0 and r["processes"] == 0}
    print(f"port watcher, one round every {WATCH_INTERVAL} s (CPU of the watching process)")
    print(
        f"{'kernels':>7} {'sockets':>7} {'procs':>5} {'idle ms/s':>9} {'core %':>7} "
        f"{'idle round ms':>13} {'change round ms':>15} {'naive round ms':>14} "
        f"{'idle vs none':>12} {'naive/idle':>10}"
    )
    for r in rows:
        b = base.get(r["kernels"])
        r["idle_vs_none"] = (
            round(r["idle_round_ms"] / b["idle_round_ms"], 2)
            if b and b["idle_round_ms"] > 0
            else None
        )
        r["naive_vs_idle"] = (
            round(r["naive_round_ms"] / r["idle_round_ms"], 1) if r["idle_round_ms"] > 0 else None
        )
        print(
            f"{r['kernels']:>7} {r['sockets']:>7} {r['processes']:>5} {r['idle_ms_per_s']:>9} "
            f"{r['idle_core_percent']:>7} {r['idle_round_ms']:>13} "
            f"{str(r['change_round_ms']):>15} {r['naive_round_ms']:>14} "
            f"{str(r['idle_vs_none']):>12} {str(r['naive_vs_idle']):>10}"
        )
    print(json.dumps({"interval_s": WATCH_INTERVAL, "results": rows}))


if __name__ == "__main__":
    main()
