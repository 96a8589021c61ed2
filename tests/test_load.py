"""Under load, through ONE companion tunnel: several kernels, each driven by its own WebSocket
client at the same time; every reply arrives, and once the clients leave and the kernels are
shut down, the runtime's and the companion's file descriptors, threads and memory are back
near where they started (no leak per connection or per kernel).

The same driver, at 50 kernels x 100 executes, is bench/bench_load.py.
"""

from __future__ import annotations

import json

import pytest

from tests.harness.load import THREAD_SLACK, companion_tunnel, run_load

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.needs_root,
    pytest.mark.timeout(600),
]

MIB = 1024 * 1024
FD_SLACK = 8
#: Memory a Python process does not hand back (allocator arenas, caches): generous on purpose,
#: a per-kernel or per-connection leak over these runs would be far above it.
RSS_SLACK = 64 * MIB


def check(result: dict, kernels: int, executes: int) -> None:
    assert result["client_errors"] == [], result["client_errors"]
    assert result["replies"] == kernels * executes
    assert result["kernels_left"] == 0
    for name in ("runtime", "companion"):
        before, after = result["baseline"][name], result["after"][name]
        peak = result["peak"][name]
        assert after["fds"] <= before["fds"] + FD_SLACK, (name, before, peak, after)
        assert after["rss"] <= before["rss"] + RSS_SLACK, (name, before, peak, after)
        # The companion's relay threads must all end (the runtime may keep its executor pool).
        assert after["threads"] <= before["threads"] + THREAD_SLACK[name], (name, before, after)
    # Under load the tunnel really carried every client at once.
    assert result["peak"]["companion"]["fds"] >= result["baseline"]["companion"]["fds"] + kernels


def test_ten_kernels_twenty_executes_each_through_one_tunnel(tmp_path):
    kernels, executes = 10, 20
    with companion_tunnel(tmp_path) as tunnel:
        result = run_load(tunnel, kernels, executes, warmup=2, batch=5, start_deadline=240)
    check(result, kernels, executes)


def test_gateway_kernels_under_load_through_one_tunnel(tmp_path):
    pytest.importorskip("kernel_gateway")
    from tests.harness.gateway import kernel_gateway

    kernels, executes = 6, 20
    with kernel_gateway(tmp_path / "gateway") as gw:
        with companion_tunnel(tmp_path, gw.url, gw.token) as tunnel:
            assert tunnel.record["gateway_url"] == gw.url
            result = run_load(tunnel, kernels, executes, warmup=2, batch=3, start_deadline=240)
            code, body = gw.api("/api/kernels")
            assert code == 200 and json.loads(body) == []  # all shut down on the gateway too
    check(result, kernels, executes)
