"""The commands a report prints: the one that reruns a study's models over
more seeds (where one seed leaves training variance unmeasured), and the one
that reproduces its numbers, with what those numbers depend on."""

from __future__ import annotations

import shlex

from archbench.records import RunRecord, lookup, source_run

MORE_SEEDS = "0,1,2,3,4"


def seeds_command(record: RunRecord, names: list[str]) -> str:
    """The `archbench run` command that trains ``names`` over 5 seeds, with
    the study options this run was given (what measures training variance)."""
    return run_command(record, names, MORE_SEEDS)


def run_command(record: RunRecord, names: list[str], seeds: str, extra: tuple[str, ...] = ()) -> str:
    """The `archbench run` command that trains ``names`` over ``seeds`` with
    the study options this run was given, then ``extra``, quoted for a shell."""
    from archbench.config import TRAIN_KEYS

    cfg = record.get("config") or {}
    order = list(record.get("models", {}))
    names = sorted(names, key=lambda n: order.index(n) if n in order else len(order))
    refs = list(dict.fromkeys(n.rsplit("@", 1)[0] if source_run(record, n) and "@" in n else n for n in names))
    parts = ["archbench", "run", "--models", ",".join(refs), "--seeds", seeds]
    ds = cfg.get("dataset")
    if isinstance(ds, str) and ds != "fashion-mnist":
        parts += ["--dataset", ds]
    for key in ("train_limit", "test_limit", "val_split", "budget_flops", "budget_seconds", "target", "trials"):
        if isinstance(cfg.get(key), (int, float)) and not isinstance(cfg.get(key), bool):
            parts += ["--" + key.replace("_", "-"), f"{cfg[key]:g}" if key.startswith("budget") else str(cfg[key])]
    if cfg.get("match") in ("flops", "time"):  # the same comparison: at equal training compute or time
        parts += ["--match", str(cfg["match"])]
    tune = cfg.get("tune")
    if isinstance(tune, dict) and tune:  # the same comparison: after equal tuning effort
        parts += ["--tune", ",".join(k + (f"={r[0]:g}:{r[1]:g}" if isinstance(r, list) and len(r) == 2 else "")
                                     for k, r in tune.items())]
        if cfg.get("tune_per_seed"):
            parts.append("--tune-per-seed")
    train = cfg.get("train") or {}
    sources = lookup(cfg, "sources", "train") or {}
    for key in TRAIN_KEYS:
        given = {str((train.get(n) or {}).get(key)) for n in names
                 if (sources.get(n) or {}).get(key) in ("cli", "api", "file", "file:model")}
        values = {str((train.get(n) or {}).get(key)) for n in names}
        if given and len(values) == 1:
            v = next(iter(values))
            flag = "--" + key.replace("_", "-")
            if v in ("True", "False"):
                parts.append(flag if v == "True" else "--no-" + key.replace("_", "-"))
            else:
                parts += [flag, v]
    parts += list(extra)
    return code_span(" ".join(shlex.quote(p) for p in parts))  # pasteable: a path with spaces stays one word


def code_span(text: str) -> str:
    """``text`` as a Markdown code span that survives backticks in it (a
    model's name): fenced by a longer run of backticks, padded with spaces
    where it starts or ends with one (CommonMark strips one space each side)."""
    longest = run = 0
    for c in text:
        run = run + 1 if c == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or longest else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def reproduce_text(record: RunRecord) -> str:
    """What the run's accuracies, losses and predictions are a function of
    (the command, the data, the CPU kind, the library versions and each
    unit's thread count, which the load never chose), and the command that
    reproduces them."""
    env = record.get("environment") or {}
    names = [n for n in record.get("models", {}) if not source_run(record, n)]
    units = [(n, u) for n in names for u in record["models"][n].get("units", []) if u.get("status") == "ok"]
    if not units:
        return ""
    counts: dict[str, set[int]] = {}
    for n, u in units:
        t = lookup(u, "threads", "threads") or lookup(u, "host", "torch_threads")
        if isinstance(t, int):
            counts.setdefault(n, set()).add(t)
    policies = {lookup(u, "threads", "policy") for _, u in units}
    old_auto = any(lookup(u, "threads", "free_cores") is not None and lookup(u, "threads", "policy") == "auto"
                   for _, u in units)
    seeds = ",".join(dict.fromkeys(str(u["seed"]) for _, u in units))
    every = {t for c in counts.values() for t in c}
    pinned = old_auto or policies != {"auto"}  # a count the command must give to train with the same one
    extra = ("--threads", str(next(iter(every)))) if len(every) == 1 and pinned else ()
    versions = ", ".join(f"{k} {env[k]}" for k in ("torch", "numpy", "python") if env.get(k))
    per_model = "; ".join(f"{n}: {', '.join(map(str, sorted(c)))}" for n, c in counts.items())
    how = ("chosen by the load at each unit's start (a run made before the count was fixed by the model): "
           "pin it to reproduce" if old_auto else
           "fixed by each model's training step and the usable cores, never by the machine's load"
           if not pinned else "as the run set it")
    return (f"These test accuracies, losses and predictions are a function of the command, the data, the CPU kind "
            f"({env.get('cpu') or 'unknown'}), the library versions ({versions or 'unknown'}) and each unit's "
            f"PyTorch thread count ({per_model or 'not recorded'}: {how}); the timings depend on the load too. "
            f"On the same CPU kind with the same versions, this command reproduces them: "
            + run_command(record, names, seeds, extra) + ".")
