"""How many units train side by side (``--jobs auto``), decided by measuring.

On a CPU, two ways use the free cores: one unit at a time with all of them
as intra-op threads, or several units side by side in worker processes with
fewer threads each. Small models scale badly over intra-op threads (each op
is too small to split well, and every op waits at a barrier for its slowest
thread), so side by side often finishes a study sooner; a large model may
not. Which one wins is measured, not guessed:

1. the free cores (:func:`archbench.run.threads.sample_load`);
2. each model's own training step, probed once at the thread count its units
   train with (fixed by the model and the machine,
   :func:`archbench.run.threads.rule_threads`, or ``--threads N``; on a copy
   of the model, torch's RNG state restored);
3. for each number of jobs J the free cores hold at those counts, the
   predicted wall time: every unit's steps times its milliseconds per step,
   the units scheduled longest first onto J workers; side by side is charged
   :data:`SIDE_BY_SIDE_SLOWDOWN`
   (units sharing memory bandwidth and cache run slower than alone, measured
   on these machines) and :data:`POOL_START_SECONDS` (starting the workers);
4. the fastest prediction wins; fewer jobs win ties.

Jobs decide only where and when units run, never a unit's thread count
(which is part of its CPU arithmetic): each unit decides its count at its
start from its model and the machine, and records it; a unit run in a worker
gives bit for bit the results it gives in this process (tested). The decision is recorded with the run (``results.json``
``execution.jobs_decision``), and each pooled unit records its pool
(``unit["side_by_side"]``).
"""

from __future__ import annotations

import heapq
import math
import time
from typing import Any

import torch

from archbench.config import StudyConfig
from archbench.models.registry import local_only_models
from archbench.records import JobsDecision

# Two units side by side on two cores, one thread each, against each alone (seed mlp and cnn, one epoch each,
# Intel Xeon 2 cores, 2026-11-26): 4-9 % slower (mlp), 5-18 % (cnn). The prediction takes the worst.
SIDE_BY_SIDE_SLOWDOWN = 1.15
# Starting the pool: two fresh interpreters import PyTorch and archbench, unpickle Fashion-MNIST and build the
# cnn (measured 3.1-3.7 s, median 3.45 s, for two workers on the 2-core Intel Xeon, 2026-11-26).
POOL_START_SECONDS = 3.5



def makespan(seconds: list[float], workers: int) -> float:
    """Wall time of ``seconds``-long jobs on ``workers`` workers, longest
    first, each to the worker that frees first (how the pool runs them)."""
    ends = [0.0] * max(1, workers)
    for s in sorted(seconds, reverse=True):
        heapq.heappush(ends, heapq.heappop(ends) + s)
    return max(ends)


def unit_steps(cfg: Any, ref: str, n_train: int) -> int:
    """Training steps of one unit of ``ref`` on ``n_train`` images (its whole recipe)."""
    tcfg = cfg.train_config_for(ref)
    bs = max(1, min(tcfg.batch_size, n_train))
    return math.ceil(n_train / bs) * tcfg.epochs


def predict(pending: list[tuple[str, int]], steps: dict[str, int], ms: dict[str, float],
            threads: dict[str, int], free: int) -> dict[int, float]:
    """Predicted wall seconds of training ``pending`` with each candidate
    number of jobs (1 up to as many as the free cores hold at each unit's own
    thread count ``threads[model]``, whose step takes ``ms[model]``
    milliseconds): {jobs: seconds}. The thread counts do not change with the
    jobs: only how many units run at once does."""
    widest = max(threads[r] for r, _ in pending)
    per_unit = [steps[r] * ms[r] / 1000 for r, _ in pending]
    options: dict[int, float] = {}
    for jobs in range(1, max(1, min(free // widest, len(pending))) + 1):
        t = makespan(per_unit, jobs)
        options[jobs] = t * SIDE_BY_SIDE_SLOWDOWN + POOL_START_SECONDS if jobs > 1 else t
    return options


def unit_thread_counts(refs: list[str], pending: list[tuple[str, int]], cfg: StudyConfig, data: Any,
                       spec: int | str) -> dict[str, int]:
    """Each model's thread count per unit: ``spec`` when fixed, else the
    "auto" rule's (:func:`archbench.run.threads.rule_threads`), as each unit
    will decide it."""
    from archbench.env import usable_cpus
    from archbench.run.threads import rule_threads, step_flops
    from archbench.run.unit import unit_model

    if spec != "auto":
        return dict.fromkeys(refs, int(spec))
    usable = usable_cpus()
    out = {}
    for ref in refs:
        seed = next(s for r, s in pending if r == ref)
        out[ref] = rule_threads(step_flops(ref, seed, cfg.train_config_for(ref), data, build=unit_model), usable)
    return out


def decide_jobs(pending: list[tuple[str, int]], cfg: StudyConfig, data: Any, device: torch.device,
                spec: int | str) -> JobsDecision:
    """The ``--jobs auto`` decision for ``pending`` units, as a JSON-safe
    record: ``policy`` "auto", ``jobs``, ``threads_per_unit`` (the most
    threads a unit takes: each unit's count is its own, fixed by its model
    and the machine, never by this decision), ``free_cores``/``usable_cores``,
    ``units``, and either ``predicted_seconds`` ({jobs: seconds}) with
    ``probe_ms_per_step`` ({model: {threads: ms}}) and ``probe_seconds``, or
    ``note`` saying why nothing was probed (one unit, one free core, an
    accelerator, models that cannot be rebuilt in a worker)."""
    from archbench.run.threads import probe_unit, sample_load
    from archbench.run.unit import unit_model

    load = sample_load()
    free = int(load["free_cores"])
    out: JobsDecision = {"policy": "auto", "jobs": 1, "threads_per_unit": None, "free_cores": free,
                           "usable_cores": load["usable_cores"], "units": len(pending),
                           "predicted_seconds": None, "probe_ms_per_step": None, "probe_seconds": 0.0}
    fixed = spec != "auto"
    note = None
    if device.type != "cpu":
        note = f"device {device.type}: units share one accelerator, one at a time"
    elif len(pending) < 2:
        note = "one unit to train"
    elif free < 2 or (fixed and free // int(spec) < 2):
        note = (f"{free} core{'s' if free != 1 else ''} free" + (f", {spec} thread(s) per unit" if fixed else "")
                + ": no room for a second unit")
    elif local_only_models([r for r, _ in pending]):
        note = (f"model(s) {', '.join(local_only_models([r for r, _ in pending]))} exist only in this process "
                "(a worker cannot rebuild them)")
    if note:
        out["note"] = note
        return out
    t0 = time.perf_counter()
    n_train = len(data.train_labels)
    refs = list(dict.fromkeys(r for r, _ in pending))
    ms: dict[str, float] = {}
    try:
        counts = unit_thread_counts(refs, pending, cfg, data, spec)
        for ref in refs:
            seed = next(s for r, s in pending if r == ref)
            ms[ref] = probe_unit(ref, seed, cfg.train_config_for(ref), data, device, [counts[ref]],
                                 build=unit_model)[counts[ref]]
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - the unit fails in its own runner, saying why
        out["note"] = f"probe failed ({type(exc).__name__}: {exc}"[:300] + "): one unit at a time"
        return out
    steps = {r: unit_steps(cfg, r, n_train) for r in refs}
    predicted = predict(pending, steps, ms, counts, free)
    jobs = min(predicted, key=lambda j: (predicted[j], j))
    out["jobs"] = jobs
    out["threads_per_unit"] = max(counts.values())
    out["predicted_seconds"] = {str(j): round(s, 2) for j, s in sorted(predicted.items())}
    out["probe_ms_per_step"] = {r: {str(counts[r]): round(v, 4)} for r, v in ms.items()}
    out["probe_seconds"] = round(time.perf_counter() - t0, 4)
    return out


def order_for_pool(pending: list[tuple[str, int]], decision: JobsDecision, cfg: Any,
                   n_train: int) -> list[tuple[str, int]]:
    """``pending`` longest predicted unit first (so the last unit to start is
    a short one), where the decision probed; else as given."""
    ms = decision.get("probe_ms_per_step")
    if not ms:
        return list(pending)

    def seconds(unit: tuple[str, int]) -> float:
        return unit_steps(cfg, unit[0], n_train) * min(ms[unit[0]].values())

    return sorted(pending, key=seconds, reverse=True)  # stable: seeds keep their order within a model


def describe_jobs(decision: JobsDecision) -> str:
    """One log line: ``jobs auto: 2 units side by side, 1 thread each (predicted 52 s vs 78 s one at a
    time; 2 of 2 cores free)``."""
    j, share = decision["jobs"], decision.get("threads_per_unit")
    head = (f"jobs auto: {j} units side by side" + (f", up to {share} thread{'s' if share != 1 else ''} each"
                                                    if share else "")
            if j > 1 else "jobs auto: one unit at a time")
    pred = decision.get("predicted_seconds")
    if pred:
        alts = ", ".join(f"{s:.{0 if s >= 10 else 1}f} s with {k} job{'s' if k != '1' else ''}"
                         for k, s in pred.items())
        return f"{head} (predicted from each model's probed step: {alts}; {decision['free_cores']} of " \
               f"{decision['usable_cores']} cores free)"
    return f"{head} ({decision.get('note')})"
