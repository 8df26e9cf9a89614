"""The command that reruns a study's models over more seeds, which the
report suggests where one seed leaves training variance unmeasured."""

from __future__ import annotations

import shlex

from archbench.records import RunRecord, lookup, source_run

MORE_SEEDS = "0,1,2,3,4"


def seeds_command(record: RunRecord, names: list[str]) -> str:
    """The `archbench run` command that trains ``names`` over 5 seeds, with
    the study options this run was given (what measures training variance)."""
    from archbench.config import TRAIN_KEYS

    cfg = record.get("config") or {}
    order = list(record.get("models", {}))
    names = sorted(names, key=lambda n: order.index(n) if n in order else len(order))
    refs = list(dict.fromkeys(n.rsplit("@", 1)[0] if source_run(record, n) and "@" in n else n for n in names))
    parts = ["archbench", "run", "--models", ",".join(refs), "--seeds", MORE_SEEDS]
    ds = cfg.get("dataset")
    if isinstance(ds, str) and ds != "fashion-mnist":
        parts += ["--dataset", ds]
    for key in ("train_limit", "test_limit", "val_split", "budget_flops", "target"):
        if isinstance(cfg.get(key), (int, float)) and not isinstance(cfg.get(key), bool):
            parts += ["--" + key.replace("_", "-"), f"{cfg[key]:g}" if key == "budget_flops" else str(cfg[key])]
    if cfg.get("match") == "flops":  # the same comparison: at equal training compute
        parts += ["--match", "flops"]
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
    return "`" + " ".join(shlex.quote(p) for p in parts) + "`"  # pasteable: a path with spaces stays one word
