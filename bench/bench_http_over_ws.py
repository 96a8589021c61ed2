"""Download throughput through http-over-websocket vs direct HTTP, on one `serve`.

Usage: python -m bench.bench_http_over_ws [--mb 100] [--rounds 3]

Starts `jupyter colabremote serve` (tests/harness/runtime.run_runtime) in a temporary
directory, writes a file of random bytes into its root, then downloads `/files/<file>`
`--rounds` times each way, alternating: directly over HTTP (tornado's AsyncHTTPClient, the
token in a header) and through `/http_over_websocket` as Colab does (one request frame,
base64 body frames decoded as they arrive). Every download is checked byte for byte (sha256).
Also records the server's peak RSS growth during the http-over-ws downloads. Prints a table
and, as its last line, one JSON object.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # write no __pycache__ into the repository

import argparse  # noqa: E402
import asyncio  # noqa: E402
import base64  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import psutil  # noqa: E402
from tornado.httpclient import AsyncHTTPClient, HTTPRequest  # noqa: E402
from tornado.websocket import websocket_connect  # noqa: E402

from tests.harness.runtime import Runtime, run_runtime  # noqa: E402

FILE_NAME = "bench.bin"


async def direct(rt: Runtime) -> tuple[int, str]:
    """GET /files/<file> over plain HTTP, streamed; (bytes, sha256)."""
    h, size = hashlib.sha256(), 0

    def chunk(data: bytes) -> None:
        nonlocal size
        h.update(data)
        size += len(data)

    request = HTTPRequest(
        f"{rt.base}/files/{FILE_NAME}",
        headers={"Authorization": f"token {rt.token}"},
        streaming_callback=chunk,
        request_timeout=600,
    )
    await AsyncHTTPClient(force_instance=True, max_body_size=1 << 40).fetch(request)
    return size, h.hexdigest()


async def over_ws(rt: Runtime, peak: list[int]) -> tuple[int, str]:
    """The same file through /http_over_websocket; (bytes, sha256). Samples the server's RSS."""
    url = f"ws://127.0.0.1:{rt.port}/http_over_websocket?min_version=0.0.7"
    ws = await websocket_connect(
        HTTPRequest(url, headers={"Authorization": f"token {rt.token}"}, request_timeout=30)
    )
    server = psutil.Process(rt.proc.pid)
    try:
        message = {"message_id": "1", "method": "GET", "path": f"/files/{FILE_NAME}"}
        await ws.write_message(json.dumps(message))
        h, size, frames = hashlib.sha256(), 0, 0
        while True:
            raw = await asyncio.wait_for(ws.read_message(), 60)
            if raw is None:
                raise ConnectionError("socket closed")
            frame = json.loads(raw)
            data = base64.b64decode(frame.get("data", ""))
            h.update(data)
            size += len(data)
            frames += 1
            if frames % 64 == 0:
                peak[0] = max(peak[0], server.memory_info().rss)
            if frame["done"]:
                return size, h.hexdigest()
    finally:
        ws.close()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="file size in MiB")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="bench-http-over-ws-") as tmp,
        run_runtime(Path(tmp)) as rt,
    ):
        path = Path(tmp) / "root" / FILE_NAME
        with open(path, "wb") as f:
            for _ in range(args.mb):
                f.write(os.urandom(1 << 20))
        expected = (args.mb << 20, hashlib.sha256(path.read_bytes()).hexdigest())
        times: dict[str, list[float]] = {"direct HTTP": [], "http-over-ws": []}
        base_rss = psutil.Process(rt.proc.pid).memory_info().rss
        peak = [base_rss]

        async def run() -> None:
            for _ in range(args.rounds):
                for label, download in (
                    ("direct HTTP", lambda: direct(rt)),
                    ("http-over-ws", lambda: over_ws(rt, peak)),
                ):
                    t0 = time.perf_counter()
                    got = await download()
                    times[label].append(time.perf_counter() - t0)
                    assert got == expected, f"{label}: wrong bytes"

        asyncio.run(run())
    rates = {k: args.mb / statistics.median(v) for k, v in times.items()}
    ratio = rates["http-over-ws"] / rates["direct HTTP"]
    growth = (peak[0] - base_rss) / 2**20
    print(f"{args.mb} MiB file, median of {args.rounds} downloads each")
    print("| path | MiB/s |")
    print("|------|------:|")
    for label, rate in rates.items():
        print(f"| {label} | {rate:.0f} |")
    print(f"http-over-ws / direct: {ratio:.2f}; server RSS growth (http-over-ws): {growth:.1f} MiB")
    result = {
        "mb": args.mb,
        "rounds": args.rounds,
        "mib_per_s": rates,
        "ratio": ratio,
        "rss_growth_mib": growth,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
