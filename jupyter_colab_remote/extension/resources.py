"""Resource figures in the shape Colab's RAM, disk and GPU gauges read."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import shutil
import signal
import typing as t

import psutil

#: The query colabtools runs; the index keeps the GPU order stable.
NVIDIA_SMI_QUERY = (
    "--query-gpu=index,name,memory.used,memory.total,utilization.gpu,utilization.memory"
)
NVIDIA_SMI_DEADLINE = 1.0
MIB = 1024 * 1024


def parse_nvidia_smi(output: str) -> list[dict[str, t.Any]]:
    """Parse `nvidia-smi --format=csv,nounits,noheader` output into Colab's GPU records.

    A row that does not parse drops the whole list, as colabtools does: a half-read
    GPU table would mislead more than an empty one.
    """
    gpus = []
    try:
        rows = [r for r in csv.reader(output.splitlines()) if r]
        rows.sort(key=lambda r: int(r[0]))
        for row in rows:
            used = int(row[2]) * MIB
            gpus.append(
                {
                    "name": row[1].strip(),
                    "memoryUsedBytes": used,
                    "memoryTotalBytes": int(row[3]) * MIB,
                    "gpuUtilization": int(row[4]) / 100,
                    "memoryUtilization": int(row[5]) / 100,
                    "everUsed": used > 0,
                }
            )
    except (ValueError, IndexError):
        return []
    return gpus


async def gpu_stats(nvidia_smi: str = "nvidia-smi") -> list[dict[str, t.Any]]:
    """Ask nvidia-smi for GPU figures with a 1 s deadline; no GPU or no answer -> []."""
    exe = shutil.which(nvidia_smi)
    if not exe:
        return []
    try:
        proc = await asyncio.create_subprocess_exec(
            exe,
            NVIDIA_SMI_QUERY,
            "--format=csv,nounits,noheader",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            # Its own process group, so a wrapper script's children die with it too.
            start_new_session=True,
        )
    except OSError:
        return []
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), NVIDIA_SMI_DEADLINE)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        return []
    if proc.returncode != 0:
        return []
    return parse_nvidia_smi(out.decode("utf-8", "replace"))


def process_tree_rss(pid: int) -> int:
    """Resident memory of a process and its children (a kernel may fork workers)."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def kernel_pid(kernel_manager: t.Any, kernel_id: str) -> int | None:
    """The OS pid of a local kernel, or None (remote/gateway kernels have none here)."""
    try:
        km = kernel_manager.get_kernel(kernel_id)
    except KeyError:
        return None
    provisioner = getattr(km, "provisioner", None)
    pid = getattr(provisioner, "pid", None)
    return pid if isinstance(pid, int) else None


def kernel_memory(kernel_manager: t.Any) -> dict[str, int]:
    """Memory in bytes by kernel id, for the kernels running on this host."""
    usage = {}
    for kernel_id in kernel_manager.list_kernel_ids():
        pid = kernel_pid(kernel_manager, kernel_id)
        if pid is not None:
            usage[kernel_id] = process_tree_rss(pid)
    return usage


def disk_stats(path: str) -> list[dict[str, t.Any]]:
    """The disk holding the server's root directory, in colabtools' field names."""
    try:
        usage = psutil.disk_usage(path)
    except OSError:
        return []
    return [
        {
            "filesystem": {
                "label": "kernel",
                "totalBytes": usage.total,
                "usedBytes": usage.used,
            }
        }
    ]


async def resource_stats(
    kernel_manager: t.Any, disk_path: str, nvidia_smi: str = "nvidia-smi"
) -> dict[str, t.Any]:
    """The `/api/colab/resources` document: memory (with per-kernel use), disks, GPUs."""
    mem = psutil.virtual_memory()
    return {
        "memory": {
            "totalBytes": mem.total,
            "freeBytes": mem.available,
            "kernels": [
                {"uuid": kid, "usedBytes": used}
                for kid, used in kernel_memory(kernel_manager).items()
            ],
        },
        "disks": disk_stats(disk_path),
        "gpus": await gpu_stats(nvidia_smi),
    }
