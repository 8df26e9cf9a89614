"""The CPU thread policy: how many intra-op threads a unit trains with.

Why. PyTorch's CPU kernels split each op over its intra-op threads and wait
at a barrier for all of them. Where a core is busy with another process, the
OS deschedules one of those threads and every op waits for it: with
thousands of small ops per second the waiting dominates (on a 2-core machine
with one core kept busy, the seed MLP's step took 14.0 ms with 2 threads and
0.90 ms with 1; see docs/performance.md). So a unit never gets more threads
than the cores that are free, and where fewer threads are faster (small
models), it gets fewer.

Once per unit, at its start. The thread count changes PyTorch's CPU
arithmetic (reductions are split differently: the same unit trained with 1
and with 2 threads ends with weights that differ in the 7th digit), so a
unit's count is chosen once, before it trains, recorded with the unit, and
never switched while it trains; a unit resumed from an epoch checkpoint keeps
the count it started with (the executor persists it beside the checkpoint).

- :func:`free_cores`: usable cores (affinity mask, cgroup quota) minus the
  ones busy right now, from two ``/proc/stat`` samples ~0.2 s apart (the load
  average lags by a minute and counts threads, not cores).
- :func:`probe_threads` / :func:`probe_unit`: time the unit's own training
  step (its model, :func:`archbench.train.step.build_step`, a real batch at
  the recipe's batch size) with each candidate thread count, in short
  alternating bursts, on a deep copy of the model with torch's RNG state
  restored: nothing the unit computes changes.
- :func:`decide_threads`: ``"auto"`` (free cores, then the probe) or a fixed
  count, as a JSON-safe record.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable
from typing import Any, cast

import torch

from archbench.env import affinity_cpus, cpu_times, load_average, procs_running, usable_cpus
from archbench.records import ThreadDecision

SAMPLE_SECONDS = 0.2    # between the two /proc/stat samples of free_cores
FREE_THRESHOLD = 0.75   # a core counts as free when at least this much of it is idle
BURST_MS = 25.0         # one probe burst: steps until this much time has passed (at least one step)
ROUNDS = 5              # timed bursts per candidate (alternating between candidates)
MAX_ROUNDS = 12         # while the two fastest counts' bursts overlap, more rounds, up to this many
TOLERANCE = 0.05        # fewer threads are preferred unless more are faster by more than this


def sample_load(interval: float = SAMPLE_SECONDS) -> dict[str, Any]:
    """How busy this process's cores are now: per-CPU busy fractions over
    ``interval`` seconds (``/proc/stat``), their sum (``busy_cores``), the
    usable and free core counts, the runnable threads and the load average.

    ``free_cores`` = usable cores minus busy ones, where a core counts as
    free only if at least 75 % of it was idle (a core an intra-op thread
    would share with a busy process is the cliff this policy avoids):
    ``floor(n_affinity - busy + 0.25)``, capped by the cgroup quota, at least 1.
    Where ``/proc/stat`` is missing (not Linux) every usable core counts as free."""
    usable = usable_cpus()
    cpus = affinity_cpus()
    out: dict[str, Any] = {"usable_cores": usable, "interval_s": interval}
    first = cpu_times()
    if first is not None and interval > 0:
        time.sleep(interval)
    second = cpu_times() if first is not None else None
    if first is None or second is None:
        out.update(free_cores=usable, busy_cores=None, busy_per_cpu=None,
                   note="no /proc/stat: every usable core counted as free")
    else:
        mine = sorted(c for c in second if (cpus is None or c in cpus) and c in first)
        busy_per_cpu = {}
        for c in mine:
            d_busy, d_total = second[c][0] - first[c][0], second[c][1] - first[c][1]
            busy_per_cpu[str(c)] = round(min(1.0, max(0.0, d_busy / d_total)), 3) if d_total > 0 else 0.0
        busy = sum(busy_per_cpu.values())
        n = len(mine) or usable
        free = math.floor(n - busy + (1 - FREE_THRESHOLD))
        out.update(free_cores=max(1, min(usable, free)), busy_cores=round(busy, 3), busy_per_cpu=busy_per_cpu)
    out["procs_running"] = procs_running()
    out["load_average"] = load_average()
    return out


def free_cores(interval: float = SAMPLE_SECONDS) -> int:
    """Cores free for this process now, in ``[1, usable_cpus()]`` (see :func:`sample_load`)."""
    return int(sample_load(interval)["free_cores"])


def candidates(free: int) -> list[int]:
    """Thread counts worth probing with ``free`` cores: 1, the powers of two
    in between, and ``free`` itself."""
    out = {1, max(1, free)}
    p = 2
    while p < free:
        out.add(p)
        p *= 2
    return sorted(out)


def probe_threads(model: torch.nn.Module, tcfg: Any, images: torch.Tensor, labels: torch.Tensor,
                  device: torch.device, counts: list[int], rounds: int = ROUNDS, burst_ms: float = BURST_MS
                  ) -> dict[int, float]:
    """Milliseconds per training step of ``model`` under the recipe ``tcfg``
    with each thread count in ``counts``: the median of ``rounds`` bursts
    (each runs steps until ``burst_ms`` have passed), the counts alternating
    (their order reversed every round) after one warm-up burst each. A count
    slower than twice the fastest after two rounds is not timed further.

    ``images`` (uint8, one batch at the recipe's batch size) and ``labels``
    are a real batch. The step runs on a deep copy of ``model``; torch's RNG
    state and thread count are restored: the model and everything the unit
    later computes are untouched."""
    from archbench.train.evaluate import to_input
    from archbench.train.step import build_step

    rng = torch.get_rng_state()
    threads_before = torch.get_num_threads()
    try:
        work = copy.deepcopy(model).to(device)
        work.train()
        setup = build_step(work, tcfg, device)
        x = to_input(images, device)
        if setup.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = labels.to(device)
        idx = torch.arange(x.shape[0], device=device)
        loss_out = torch.zeros((), device=device)
        pred_out = torch.zeros(x.shape[0], dtype=torch.long, device=device)

        def burst(n: int, limit_ms: float) -> float:
            torch.set_num_threads(n)
            steps, t0 = 0, time.perf_counter()
            while True:
                setup.step(x.index_select(0, idx), y, loss_out, pred_out)  # the loop's gather, then its step
                steps += 1
                elapsed = (time.perf_counter() - t0) * 1000
                if elapsed >= limit_ms:
                    return elapsed / steps

        samples: dict[int, list[float]] = {n: [] for n in counts}
        for n in counts:
            burst(n, 0.0)  # warm-up: lazy kernel and optimizer-state set-up, once per count
            burst(n, 0.0)
        live = list(counts)
        r = 0
        # A noisy host (other tenants' bursts) can make one count look slower for a few bursts: while the two
        # fastest counts' middle halves overlap, more rounds, up to max(rounds, MAX_ROUNDS).
        while r < rounds or (r < max(rounds, MAX_ROUNDS) and len(live) > 1 and not separated(samples, live)):
            for n in (live if r % 2 == 0 else live[::-1]):
                samples[n].append(burst(n, burst_ms))
            if r == 1 and len(live) > 1:
                best = min(statistics.median(samples[n]) for n in live)
                live = [n for n in live if statistics.median(samples[n]) <= 2 * best]
            r += 1
        return {n: statistics.median(v) for n, v in samples.items()}
    finally:
        torch.set_num_threads(threads_before)
        torch.set_rng_state(rng)


def separated(samples: dict[int, list[float]], live: list[int]) -> bool:
    """Do the two fastest counts (by median) differ beyond the bursts' spread:
    the faster one's third quartile below the slower one's first quartile?"""
    def quartiles(v: list[float]) -> tuple[float, float]:
        q = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else [v[0]] * 3
        return q[0], q[2]

    first, second = sorted(live, key=lambda n: statistics.median(samples[n]))[:2]
    return quartiles(samples[first])[1] < quartiles(samples[second])[0]


def pick(ms_per_step: dict[int, float], tolerance: float = TOLERANCE) -> int:
    """The fewest threads within ``tolerance`` of the fastest."""
    best = min(ms_per_step.values())
    return min(n for n, ms in ms_per_step.items() if ms <= best * (1 + tolerance))


Build = Callable[[str, int, Any], torch.nn.Module]  # (model, seed, data) -> the unit's model, as its runner builds it


def decide_threads(spec: int | str, ref: str, seed: int, tcfg: Any, data: Any, device: torch.device,
                   cap: int | None = None, *, build: Build) -> ThreadDecision:
    """The thread decision for one unit, as a JSON-safe record:
    ``policy`` ("auto" or "fixed"), ``threads``, ``free_cores`` and
    ``usable_cores`` (at the decision), ``cap`` (the most threads "auto" may
    pick: a share of the cores when units run side by side), ``probe_ms_per_step``
    (by thread count, as strings; None when nothing was probed), ``probe_seconds``,
    ``load`` (busy cores, runnable threads, load average) and, when the
    choice was not probed, ``note`` saying why.

    ``spec``: ``"auto"`` or a fixed count (no probe; the caller warns when it
    exceeds the usable cores). The probe builds its own copy of the unit's
    model; torch's RNG state is restored after."""
    load = sample_load()
    free = int(load["free_cores"])
    record: dict[str, Any] = {
        "policy": "fixed" if spec != "auto" else "auto", "threads": None,
        "free_cores": free, "usable_cores": load["usable_cores"], "cap": cap,
        "probe_ms_per_step": None, "probe_seconds": 0.0,
        "load": {k: load[k] for k in ("busy_cores", "busy_per_cpu", "procs_running", "load_average")},
    }
    if spec != "auto":
        record["threads"] = int(spec)
        return cast(ThreadDecision, record)
    limit = max(1, min(free, cap or free))
    if device.type != "cpu":
        record.update(threads=limit, note=f"device {device.type}: the step runs on the accelerator, not probed")
        return cast(ThreadDecision, record)
    if limit == 1:
        record.update(threads=1, note="one core free" + (" (its share)" if cap == 1 else ""))
        return cast(ThreadDecision, record)
    t0 = time.perf_counter()
    try:
        ms = probe_unit(ref, seed, tcfg, data, device, candidates(limit), build=build)
        record.update(threads=pick(ms), probe_ms_per_step={str(n): round(v, 4) for n, v in ms.items()})
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - a unit that cannot run a step fails in its own runner, saying why
        record.update(threads=limit, note=f"probe failed ({type(exc).__name__}: {exc}"[:300] + "); using the "
                      "free cores")
    record["probe_seconds"] = round(time.perf_counter() - t0, 4)
    return cast(ThreadDecision, record)


def probe_unit(ref: str, seed: int, tcfg: Any, data: Any, device: torch.device, counts: list[int], *,
               build: Build) -> dict[int, float]:
    """:func:`probe_threads` on the unit's own model (built as its runner
    builds it) and its data's first batch at the recipe's batch size, with
    ``counts`` threads; torch's RNG state is restored after (building draws
    from it)."""
    rng = torch.get_rng_state()
    try:
        model = build(ref, seed, data)
        bs = min(tcfg.batch_size, len(data.train_labels))
        return probe_threads(model, tcfg, data.train_images[:bs], data.train_labels[:bs], device, counts)
    finally:
        torch.set_rng_state(rng)


def describe(decision: ThreadDecision) -> str:
    """One line for the log: ``2 threads (auto: 1 -> 0.91 ms/step, 2 -> 0.57 ms/step; 2 of 2 cores free)``."""
    n = decision.get("threads")
    parts = [f"{n} thread{'s' if n != 1 else ''} ({decision.get('policy')}"]
    ms = decision.get("probe_ms_per_step")
    if ms:
        parts.append(": " + ", ".join(f"{k} -> {v:.2f} ms/step" for k, v in ms.items()))
    elif decision.get("note"):
        parts.append(f": {decision['note']}")
    parts.append(f"; {decision.get('free_cores')} of {decision.get('usable_cores')} cores free")
    if decision.get("reused"):
        parts.append("; kept from the unit's start, as its checkpoint was")
    return "".join(parts) + ")"
