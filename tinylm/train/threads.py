"""How many CPU threads torch may use (train.threads=0 chooses).

torch starts one intra-op thread per logical CPU. On a machine that is busy with other work the
threads of a small step wait on each other far more than they compute: on a 2-core machine at load
7-13, a small GPT step took 8x longer with torch's 2 threads than with 1
(bench/results/threads_cpu_2026-12-01.md; bench/bench_threads.py measures it on yours). Auto: one thread per physical core this process may run on, minus the cores
the 1-minute load average says are busy, and at least 1.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch


def physical_cores(cpus: set[int]) -> int:
    """Distinct (package, core) pairs among `cpus` (Linux sysfs); len(cpus) when unknown."""
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topo.joinpath("physical_package_id").read_text().strip(), topo.joinpath("core_id").read_text().strip()))
        except OSError:
            return len(cpus)
    return len(cores) or len(cpus)


def auto_threads() -> tuple[int, str]:
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores = physical_cores(cpus)
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available (Windows)
        return cores, f"{cores} physical core(s), load unknown"
    free = max(1, min(cores, math.floor(len(cpus) - load)))
    return free, f"{cores} physical core(s), 1-min load {load:.2f} -> {free} free"


def set_threads(requested: int, device: torch.device) -> str:
    """Apply train.threads and return the line printed at start."""
    if requested > 0:
        torch.set_num_threads(requested)
        return f"threads: {requested} (train.threads)"
    if device.type != "cpu":
        return f"threads: {torch.get_num_threads()} (torch default; the GPU does the work)"
    n, why = auto_threads()
    torch.set_num_threads(n)
    return f"threads: {n} (auto: {why}; set train.threads to choose)"
