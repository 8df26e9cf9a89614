"""The CPU thread policy: how many intra-op threads a unit trains with.

Why one count, fixed by the model and the machine. PyTorch's CPU kernels
split each op over its intra-op threads (reductions are split differently:
the same unit trained with 1 and with 2 threads ends with weights that differ
in the 7th digit, and test accuracies that differ in the 2nd decimal). So
the thread count of ``--threads auto`` is a function of the unit's model
(its counted training-step FLOPs), its recipe (the batch size) and the
machine (its usable cores: affinity mask, cgroup quota) only, never of what
else runs at the moment: the same command gives the same numbers on a quiet
and on a busy machine of the same kind (:func:`rule_threads`). Speed from the
free cores comes from units side by side (``--jobs auto``,
:mod:`archbench.run.jobs`), which does not change a unit's arithmetic.

Why few threads. Each op waits at a barrier for all of its threads. Where a
core is busy with another process, the OS deschedules one of those threads
and every op waits for it: with thousands of small ops per second the
waiting dominates (on a 2-core machine with one core kept busy, the seed
MLP's step took 14.0 ms with 2 threads and 0.90 ms with 1; see
docs/performance.md). So small models get one thread.

Once per unit, at its start: a unit's count is decided before it trains,
recorded with the unit, and never switched while it trains; a unit resumed
from an epoch checkpoint keeps the count it started with (the executor
persists it beside the checkpoint).

- :func:`sample_load` / :func:`free_cores`: usable cores minus the ones busy
  right now, from two ``/proc/stat`` samples ~0.2 s apart (for ``--jobs
  auto``: how many units side by side).
- :func:`probe_threads` / :func:`probe_unit`: time the unit's own training
  step with given thread counts on a copy of the model, torch's RNG state
  restored (``--jobs auto``'s prediction).
- :func:`decide_threads`: ``"auto"`` (:func:`rule_threads`) or a fixed count,
  as a JSON-safe record.
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

# "auto": one intra-op thread per this many FLOPs of one training step (forward, about 3x for forward and
# backward, times the batch), in powers of two up to the usable cores. Small models scale badly over intra-op
# threads (each op waits at a barrier for its slowest thread: see the module's docstring), so every model of the
# zoo's size trains with one thread per unit and the cores go to units side by side (--jobs).
FLOPS_PER_THREAD = 2e9


def rule_threads(step_flops: float | None, usable: int) -> int:
    """The "auto" thread count of a unit whose training step costs
    ``step_flops`` on a machine with ``usable`` cores: the largest power of
    two ``n <= usable`` with ``step_flops >= FLOPS_PER_THREAD * n`` (at least
    1; 1 when the step could not be counted). A function of the model, the
    recipe and the machine only: never of the momentary load."""
    n = 1
    while step_flops is not None and n * 2 <= usable and step_flops >= FLOPS_PER_THREAD * n * 2:
        n *= 2
    return n


def step_flops(ref: str, seed: int, tcfg: Any, data: Any, *, build: Build) -> float:
    """FLOPs of one training step of the unit's model: its counted forward
    FLOPs on one image, times 3 (forward and backward), times the recipe's
    batch size. Torch's RNG state is restored after (building draws from it)."""
    from archbench.measure.counting import OpCounter
    from archbench.train.evaluate import to_input

    rng = torch.get_rng_state()
    try:
        model = build(ref, seed, data).eval()
        with torch.no_grad(), OpCounter() as counter:
            model(to_input(data.train_images[:1], torch.device("cpu")))
        return float(counter.count.total) * 3 * max(1, min(tcfg.batch_size, len(data.train_labels)))
    finally:
        torch.set_rng_state(rng)


def decide_threads(spec: int | str, ref: str, seed: int, tcfg: Any, data: Any, device: torch.device,
                   *, build: Build) -> ThreadDecision:
    """The thread decision for one unit, as a JSON-safe record:
    ``policy`` ("auto" or "fixed"), ``threads``, ``usable_cores`` and, for
    "auto", ``step_flops`` (one training step, counted) and
    ``flops_per_thread`` (the rule's constant, :func:`rule_threads`);
    ``note`` where the step could not be counted.

    ``spec``: ``"auto"`` or a fixed count (the caller warns when it exceeds
    the usable cores). Neither depends on the load: the thread count changes
    a unit's CPU arithmetic, so the same command gives the same numbers on a
    quiet and on a busy machine of the same kind (units side by side are
    what ``--jobs auto`` chooses for speed)."""
    usable = usable_cpus()
    record: dict[str, Any] = {"policy": "fixed" if spec != "auto" else "auto", "threads": None,
                              "usable_cores": usable}
    if spec != "auto":
        record["threads"] = int(spec)
        return cast(ThreadDecision, record)
    t0 = time.perf_counter()
    flops: float | None = None
    try:
        flops = step_flops(ref, seed, tcfg, data, build=build)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - a model that cannot run fails in its own runner, saying why
        record["note"] = f"the step could not be counted ({type(exc).__name__}: {exc}"[:300] + "): 1 thread"
    record.update(threads=rule_threads(flops, usable), step_flops=flops, flops_per_thread=FLOPS_PER_THREAD,
                  rule_seconds=round(time.perf_counter() - t0, 4))
    if device.type != "cpu":
        record["note"] = f"device {device.type}: the step runs on the accelerator"
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
    """One line for the log: ``1 thread (auto: 0.35 GFLOPs per step, 2 usable cores)``."""
    n = decision.get("threads")
    parts = [f"{n} thread{'s' if n != 1 else ''} ({decision.get('policy')}"]
    flops = decision.get("step_flops")
    if flops is not None:
        parts.append(f": {flops / 1e9:.2g} GFLOPs per step")
    elif decision.get("note"):
        parts.append(f": {decision['note']}")
    parts.append(f"; {decision.get('usable_cores')} usable core{'s' if decision.get('usable_cores') != 1 else ''}")
    if decision.get("reused"):
        parts.append("; kept from the unit's start, as its checkpoint was")
    return "".join(parts) + ")"
