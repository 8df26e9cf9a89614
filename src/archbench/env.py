"""The environment a run executed in: versions, CPU, GPU, threads, and the
host's load (what else competed for the cores while a unit was timed)."""

from __future__ import annotations

import math
import os
import platform
import sys
from typing import Any


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what the platform module says."""
    return _cpu_model()


def physical_memory() -> int | None:
    """This machine's physical memory in bytes (page size times page count),
    or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def affinity_cpus() -> set[int] | None:
    """The CPU numbers this process may run on (its affinity mask), or None
    where the OS does not say."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def usable_cpus() -> int:
    """Cores this process may run on: its affinity mask (else the machine's
    count), capped by a cgroup v2 CPU quota where one is set."""
    cpus = affinity_cpus()
    n = len(cpus) if cpus else (os.cpu_count() or 1)
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return n


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (runnable threads), or None where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def cpu_times() -> dict[int, tuple[int, int]] | None:
    """Per CPU, (busy, total) time in clock ticks since boot, from
    ``/proc/stat`` (Linux; None elsewhere). Busy is everything but idle and
    iowait: user, nice, system, irq, softirq and steal (time the hypervisor
    gave this virtual CPU's core to another machine is not ours either)."""
    out: dict[int, tuple[int, int]] = {}
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            for line in fh:
                if not line.startswith("cpu") or line.startswith("cpu "):
                    continue
                name, *fields = line.split()
                ticks = [int(x) for x in fields[:8]]  # guest time is already inside user time
                ticks += [0] * (8 - len(ticks))
                total = sum(ticks)
                out[int(name[3:])] = (total - ticks[3] - ticks[4], total)
    except (OSError, ValueError):
        return None
    return out or None


def procs_running() -> int | None:
    """Threads runnable right now on the whole machine (``procs_running`` in
    ``/proc/stat``, this one included), or None where there is no such count."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("procs_running"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def host_snapshot() -> dict[str, Any]:
    """The load right now, for the start of a timed unit."""
    return {"load_average": load_average()}


def unit_host(start: dict[str, Any] | None) -> dict[str, Any]:
    """What a unit's timings ran on: CPU model, usable cores, PyTorch's
    threads, and the load average at the unit's start (``start``, from
    :func:`host_snapshot`) and end. A 1-minute load above the usable cores
    means more runnable threads than cores: something competed with the unit."""
    import torch

    return {"cpu": _cpu_model(), "usable_cpus": usable_cpus(), "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "load_start": (start or {}).get("load_average"), "load_end": load_average()}


def _version(pkg: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(pkg)
    except Exception:  # noqa: BLE001
        return None


def environment(version: str) -> dict[str, Any]:
    """The record's ``environment``: archbench's ``version`` (given by the
    caller: this module imports nothing of archbench), Python, the platform,
    the CPU, torch and its threads, the accelerator."""
    import torch

    env: dict[str, Any] = {
        "archbench": version,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "load_average": load_average(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "numpy": _version("numpy"),
        "safetensors": _version("safetensors"),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        env["cuda"] = torch.version.cuda
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        env["cudnn"] = torch.backends.cudnn.version()
    return env
