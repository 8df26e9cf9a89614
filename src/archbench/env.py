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


def usable_cpus() -> int:
    """Cores this process may run on: its affinity mask (else the machine's
    count), capped by a cgroup v2 CPU quota where one is set."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
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


def environment() -> dict[str, Any]:
    import torch

    from archbench import __version__

    env: dict[str, Any] = {
        "archbench": __version__,
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
