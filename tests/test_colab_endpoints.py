"""Colab's own endpoints: build-info, resources (RAM, disk, GPU) and drive."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest
from tornado.httpclient import HTTPClientError

from jupyter_colab_remote.extension.resources import gpu_stats, parse_nvidia_smi

#: Exercises the jupyter_server extension: also run at the lowest dependency versions.
pytestmark = pytest.mark.server

XSSI = b")]}'\n"

# What `nvidia-smi --query-gpu=index,name,memory.used,memory.total,utilization.gpu,
# utilization.memory --format=csv,nounits,noheader` prints on a two-GPU box (rows out of order).
NVIDIA_SMI_OUTPUT = """1, NVIDIA A100-SXM4-40GB, 0, 40960, 0, 0
0, NVIDIA A100-SXM4-40GB, 1024, 40960, 37, 12
"""


def colab_json(body: bytes) -> dict:
    """Strip Colab's XSSI guard, which every endpoint must send, and parse the JSON."""
    assert body.startswith(XSSI), body[:20]
    return json.loads(body[len(XSSI) :])


def fake_nvidia_smi(tmp_path, script: str) -> str:
    """An executable standing in for nvidia-smi (no GPU on this machine)."""
    path = tmp_path / "nvidia-smi"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


async def test_build_info(jp_fetch, monkeypatch):
    """The probe Colab sends first answers with the release tag."""
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab_20260101-060000_RC00")
    r = await jp_fetch("api", "colab", "build-info")
    assert r.headers["Content-Type"].startswith("application/json")
    assert colab_json(r.body) == {"release_tag": "release-colab_20260101-060000_RC00"}


async def test_drive(jp_fetch):
    """No Drive mount off Colab: an empty error list."""
    r = await jp_fetch("api", "colab", "drive")
    assert colab_json(r.body) == {"dfs": []}


@pytest.mark.parametrize("endpoint", ["build-info", "resources", "drive"])
async def test_endpoints_need_a_token(jp_fetch, endpoint):
    """Colab's endpoints are authenticated like the rest of the API."""
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("api", "colab", endpoint, headers={"Authorization": ""})
    assert e.value.code == 403


async def test_resources_memory_disk_and_kernels(jp_fetch, jp_root_dir):
    """Colab's RAM gauge: totals from the host, and each kernel's own memory."""
    r = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
    kid = json.loads(r.body)["id"]
    try:
        stats = colab_json((await jp_fetch("api", "colab", "resources")).body)
    finally:
        await jp_fetch("api", "kernels", kid, method="DELETE")
    mem = stats["memory"]
    assert mem["totalBytes"] > mem["freeBytes"] > 0
    kernels = {k["uuid"]: k["usedBytes"] for k in mem["kernels"]}
    assert set(kernels) == {kid}
    assert 2**20 < kernels[kid] < mem["totalBytes"]
    (disk,) = stats["disks"]
    fs = disk["filesystem"]
    assert fs["label"] == "kernel"
    st = os.statvfs(jp_root_dir)
    assert fs["totalBytes"] == st.f_blocks * st.f_frsize
    assert 0 < fs["usedBytes"] < fs["totalBytes"]
    # No nvidia-smi on this machine: Colab shows no GPU gauge rather than an error.
    assert stats["gpus"] == []


async def test_resources_report_gpus_from_nvidia_smi(jp_fetch, colab_app, tmp_path):
    """With nvidia-smi present, every GPU appears in index order with Colab's fields."""
    colab_app.nvidia_smi = fake_nvidia_smi(tmp_path, f"cat <<'EOF'\n{NVIDIA_SMI_OUTPUT}EOF\n")
    stats = colab_json((await jp_fetch("api", "colab", "resources")).body)
    assert stats["gpus"] == [
        {
            "name": "NVIDIA A100-SXM4-40GB",
            "memoryUsedBytes": 1024 * 2**20,
            "memoryTotalBytes": 40960 * 2**20,
            "gpuUtilization": 0.37,
            "memoryUtilization": 0.12,
            "everUsed": True,
        },
        {
            "name": "NVIDIA A100-SXM4-40GB",
            "memoryUsedBytes": 0,
            "memoryTotalBytes": 40960 * 2**20,
            "gpuUtilization": 0.0,
            "memoryUtilization": 0.0,
            "everUsed": False,
        },
    ]


async def test_hung_nvidia_smi_is_cut_off_after_one_second(tmp_path):
    """A wedged driver must not hang Colab's gauges: 1 s deadline, then no GPUs."""
    exe = fake_nvidia_smi(tmp_path, "sleep 30\n")
    start = time.monotonic()
    assert await gpu_stats(exe) == []
    assert time.monotonic() - start < 3


@pytest.mark.parametrize(
    "output",
    ["", "garbage\n", "0, GPU, [N/A], 40960, 0, 0\n", "0, only, three\n"],
)
def test_unparsable_nvidia_smi_output_gives_no_gpus(output):
    """Odd driver output yields an empty list, never a half-filled or failing answer."""
    assert parse_nvidia_smi(output) == []


async def test_failing_nvidia_smi_gives_no_gpus(tmp_path):
    """nvidia-smi present but failing (driver not loaded) -> no GPUs."""
    exe = fake_nvidia_smi(tmp_path, "echo 'NVIDIA-SMI has failed' >&2; exit 9\n")
    assert await gpu_stats(exe) == []
