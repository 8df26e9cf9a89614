"""report.md, rendered from a run record alone."""

from __future__ import annotations

import math

from archbench.report.summary import summarize
from archbench.report.units import fmt_bytes, fmt_count, fmt_pct, fmt_seconds, fmt_si

TABLE_HEAD = ("Model", "Test accuracy", "Trainable params", "Saved size (safetensors)",
              "FLOPs/sample (inference)", "FLOPs/sample (training)", "Peak training memory", "Train time")


def _acc_cell(s: dict) -> str:
    a = s["accuracy"]
    if a["n"] == 0:
        return "failed" if s["failed"] else "n/a"
    if a["n"] == 1:
        return fmt_pct(a["mean"])
    return f"{100 * a['mean']:.2f} % ± {100 * a['std']:.2f} (n={a['n']})"


def comparison_rows(record: dict) -> list[tuple[str, ...]]:
    rows = []
    for s in summarize(record):
        rows.append((
            s["model"], _acc_cell(s), fmt_count(s["params"]), fmt_bytes(s["saved_bytes"]),
            fmt_si(s["flops_inference"], "FLOPs"), fmt_si(s["flops_train_per_sample"], "FLOPs"),
            fmt_bytes(s["peak_train_bytes"]), fmt_seconds(s["train_seconds"]["mean"]),
        ))
    return rows


def table(head, rows) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def text_table(head, rows) -> str:
    """A plain-text table for terminals."""
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def _differences(record: dict) -> list[str]:
    sums = [s for s in summarize(record) if s["accuracy"]["n"] > 0]
    if len(sums) < 2:
        return []
    best = max(sums, key=lambda s: s["accuracy"]["mean"])
    out = []
    for s in sums:
        if s is best:
            continue
        diff = 100 * (best["accuracy"]["mean"] - s["accuracy"]["mean"])
        parts = [f"**{best['model']}** vs {s['model']}: {diff:+.2f} pp mean test accuracy "
                 f"(n = {best['accuracy']['n']} vs {s['accuracy']['n']} seeds)"]
        for label, more, less, key in (
            ("params", "more", "fewer", "params"),
            ("FLOPs per inference", "more", "fewer", "flops_inference"),
            ("peak training memory", "more", "less", "peak_train_bytes"),
            ("train time", "more", "less", None),
        ):
            a = best[key] if key else best["train_seconds"]["mean"]
            b = s[key] if key else s["train_seconds"]["mean"]
            if a and b and not any(isinstance(v, float) and math.isnan(v) for v in (a, b)):
                ratio = a / b
                parts.append(f"{ratio:.2f}× {more} {label}" if ratio >= 1 else f"{1 / ratio:.2f}× {less} {label}")
        out.append("- " + "; ".join(parts) + ".")
    out.append("\nThese are mean differences; this report runs no significance test, so a gap "
               "of a few tenths of a point between single runs may be noise (one 10,000-image test "
               "set alone has a 95 % binomial interval of about ±0.6 pp near 89 %).")
    return out


def render_markdown(record: dict) -> str:
    cfg = record.get("config", {})
    tcfg = cfg.get("train", {})
    env = record.get("environment", {})
    ds = record.get("dataset", {})
    lines = [f"# archbench run `{record.get('name', '?')}`", ""]
    lines += [
        f"Dataset **{ds.get('name', '?')}**: {fmt_count(ds.get('train_samples'))} train / "
        f"{fmt_count(ds.get('test_samples'))} test images"
        + (" (SHA-256 verified)." if ds.get("verified_sha256") else " (not verified)."),
        f"Recipe: Adam (lr {tcfg.get('lr')}, betas {tcfg.get('beta1')}/{tcfg.get('beta2')}, eps "
        f"{tcfg.get('eps')}), batch {tcfg.get('batch_size')}, {tcfg.get('epochs')} epochs, "
        f"seeds {cfg.get('seeds')}, device {record.get('device', tcfg.get('device'))}.",
        "",
        "## Comparison",
        "",
        table(TABLE_HEAD, comparison_rows(record)),
        "",
        "Test accuracy: mean ± sample standard deviation over seeds. FLOPs count matrix-multiply and "
        "convolution arithmetic (1 multiply-accumulate = 2 FLOPs); training FLOPs are one full "
        "forward + backward step divided by the batch size. Peak training memory is measured over one "
        "steady-state step (parameters, gradients, Adam state, input batch, activations, "
        "temporaries). Train time covers the training steps only (no evaluation).",
        "",
    ]
    diffs = _differences(record)
    if diffs:
        lines += ["## Differences", ""] + diffs + [""]
    lines += ["## Per model", ""]
    for name, entry in record.get("models", {}).items():
        meas = entry.get("measurements") or {}
        lines += [f"### {name}", ""]
        if entry.get("description"):
            lines += [entry["description"], ""]
        if meas:
            fl, mem = meas["flops"], meas["memory"]["train_step"]
            p = meas["params"]
            sizes = meas["saved_size_bytes"]
            lines += [
                f"- Parameters: {fmt_count(p['trainable'])} trainable, {fmt_count(p['non_trainable'])} "
                f"non-trainable; raw weights {fmt_bytes(p['raw_weight_bytes'])}.",
                "- Saved files: " + ", ".join(f"{k} {fmt_bytes(v)} ({fmt_count(v)} B)"
                                             for k, v in sizes.items() if isinstance(v, int))
                + (f"; ONNX not measured: {sizes['onnx_note']}" if sizes.get("onnx_note") else "") + ".",
                f"- Inference: {fmt_count(fl['forward_macs_per_sample'])} MACs = "
                f"{fmt_count(fl['forward_per_sample'])} matmul/conv FLOPs per sample"
                + (f", plus {fmt_count(fl['forward_other_per_sample'])} other FLOPs (bias, activations, pooling)"
                   if "forward_other_per_sample" in fl else "") + ".",
                f"- Training step (batch {fl['train_step_batch_size']}): {fmt_count(fl['train_step'])} matmul/conv "
                f"FLOPs (forward {fmt_count(fl['train_step_forward'])}, backward {fmt_count(fl['train_step_backward'])})"
                + (f", plus {fmt_count(fl['train_step_other'])} other FLOPs including the Adam update"
                   if "train_step_other" in fl else "") + ".",
            ]
            if "per_run" in fl:
                lines.append(f"- Whole run: {fmt_si(fl['per_run']['matmul_conv'], 'FLOPs')} matmul/conv + "
                             f"{fmt_si(fl['per_run']['other'], 'FLOPs')} other over {fmt_count(fl['per_run']['steps'])} steps.")
            lines.append(
                f"- Peak training-step memory {fmt_bytes(mem['peak_bytes'])} ("
                + ", ".join(f"{k.replace('_', ' ')} {fmt_bytes(v)}" for k, v in mem["breakdown"].items())
                + ")" + (f"; first step {fmt_bytes(meas['memory']['first_step']['peak_bytes'])}"
                         if "first_step" in meas["memory"] else "")
                + f". The seed notebook's estimate, 4 × params, would say "
                f"{fmt_bytes(meas['memory']['estimate']['params_grads_adam_bytes'])}.")
            if "speed" in meas:
                lat = meas["speed"]["inference_latency_batch1"]
                thr = meas["speed"]["inference_throughput_batch1024"]
                lines.append(f"- Inference latency at batch 1: p50 {fmt_seconds(lat['p50_seconds'])}, p99 "
                             f"{fmt_seconds(lat['p99_seconds'])}; throughput at batch 1024: "
                             f"{thr['items_per_second']:,.0f} samples/s.")
            if mem.get("cuda_allocator_peak_bytes") is not None:
                lines.append(f"- CUDA allocator peak during the step: {fmt_bytes(mem['cuda_allocator_peak_bytes'])}.")
            lines.append("")
        rows = []
        for u in entry.get("units", []):
            if u.get("status") != "ok":
                rows.append((str(u.get("seed")), "failed: " + u.get("error", "?").replace("|", "/"), "", "", ""))
                continue
            rows.append((str(u["seed"]), fmt_pct(u["test"]["accuracy"]), f"{u['test']['loss']:.4f}",
                         fmt_seconds(u["timings"]["train_seconds"]),
                         f"{u['timings']['samples_per_second']:,.0f}"))
        if rows:
            lines += [table(("Seed", "Test accuracy", "Test loss", "Train time", "Samples/s"), rows), ""]
    lines += [
        "## Environment",
        "",
        ", ".join(f"{k}: {v}" for k, v in env.items() if v is not None),
        "",
    ]
    return "\n".join(lines)
