"""Text rendering of ``archbench profile`` records."""

from __future__ import annotations

from archbench.report.markdown import text_table
from archbench.report.units import fmt_bytes, fmt_count, fmt_seconds, fmt_si


def render_profile(rec: dict) -> str:
    meas = rec["measurements"]
    fl, mem, p = meas["flops"], meas["memory"], meas["params"]
    lines = [f"archbench profile {rec['model']}  (input {tuple(rec['input_shape'])}, training batch "
             f"{rec['batch_size']}, device {rec['device']})", ""]
    rows = [(r["layer"], r["type"], str(r["output_shape"][1:] if r["output_shape"] else ""), fmt_count(r["params"]),
             fmt_count(r["macs"]), fmt_count(r["matmul_conv_flops"]), fmt_count(r["other_flops"]))
            for r in rec["layers"]]
    partial = fl.get("partial") or {}
    mark = lambda key: " (partial)" if partial.get(key) else ""  # noqa: E731
    rows.append(("total", "", "", fmt_count(p["total"]), fmt_count(fl["forward_macs_per_sample"]) + mark("forward"),
                 fmt_count(fl["forward_per_sample"]) + mark("forward"),
                 fmt_count(fl["forward_other_per_sample"]) + mark("forward")))
    lines.append("Inference, per sample (batch 1, eval mode):")
    lines.append(text_table(("Layer", "Type", "Output", "Params", "MACs", "FLOPs matmul/conv", "FLOPs other"), rows))
    ph = fl["train_step_phases"]
    lines += ["", f"Training step at batch {fl['train_step_batch_size']} (FLOPs):"]
    srows = []
    for name in ("forward", "backward", "optimizer", "total"):
        d = ph[name]
        srows.append((name, fmt_count(d["matmul_conv"]), fmt_count(d["other_total"]), fmt_count(d["total"]),
                      ", ".join(f"{k} {fmt_si(v)}" for k, v in d["other"].items() if v)))
    lines.append(text_table(("phase", "matmul/conv", "other", "all", "other by category"), srows))
    for key, what in (("forward", "inference"), ("train_step", "training-step")):
        ops = fl.get("forward_uncounted_ops" if key == "forward" else "uncounted_ops") or {}
        if partial.get(key):
            lines.append(f"PARTIAL: the {what} FLOPs miss ops with no formula: "
                         + ", ".join(f"{k} ×{v}" for k, v in ops.items()))
    lines.append(f"per sample: {fmt_si(fl['train_per_sample'], 'FLOPs')} matmul/conv")
    if "per_epoch" in fl:
        ep = fl["per_epoch"]
        lines.append(f"per epoch ({ep['steps']} steps): {fmt_si(ep['matmul_conv'], 'FLOPs')} matmul/conv + "
                     f"{fmt_si(ep['other'], 'FLOPs')} other" + (
                         f"; per run: {fmt_si(fl['per_run']['total'], 'FLOPs')}" if "per_run" in fl else ""))
    unc = fl.get("uncounted_ops") or {}
    lines.append("uncounted ops: " + (", ".join(f"{k} ×{v}" for k, v in unc.items()) if unc else "none")
                 + "; data movement (0 FLOPs): "
                 + (", ".join(f"{k} ×{v}" for k, v in (fl.get("data_movement_ops") or {}).items()) or "none"))
    st, first = mem["train_step"], mem["first_step"]
    lines += ["", "Memory (measured; bytes of live tensors at op boundaries):",
              f"  training step, steady state: {fmt_bytes(st['peak_bytes'])} = "
              + " + ".join(f"{k.replace('_', ' ')} {fmt_bytes(v)}" for k, v in st["breakdown"].items()),
              f"  training step, first (Adam state allocated inside it): {fmt_bytes(first['peak_bytes'])}",
              f"  saved for backward after the forward pass: {fmt_bytes(st['activations_saved_bytes'])}",
              f"  inference at batch 1: {fmt_bytes(mem['inference_batch1']['peak_bytes'])}",
              f"  estimate (4 × params + input + every layer's output): {fmt_bytes(mem['estimate']['total_bytes'])}"
              f" — shown beside the measurement, not instead of it"]
    if st.get("cuda_allocator_peak_bytes") is not None:
        lines.append(f"  CUDA allocator peak during the step: {fmt_bytes(st['cuda_allocator_peak_bytes'])} "
                     "(includes library workspaces)")
    if mem.get("process_peak_rss_bytes"):
        lines.append(f"  process peak RSS: {fmt_bytes(mem['process_peak_rss_bytes'])}")
    sz = meas["saved_size_bytes"]
    lines += ["", "Size: raw weights " + fmt_bytes(p["raw_weight_bytes"]) + "; files: "
              + ", ".join(f"{k} {fmt_bytes(v)}" for k, v in sz.items() if isinstance(v, int))
              + (f"; onnx: {sz['onnx_note']}" if sz.get("onnx_note") else "")]
    if "speed" in meas:
        sp = meas["speed"]
        lat, thr, ts = sp["inference_latency_batch1"], sp["inference_throughput_batch1024"], sp["train_step"]
        lines += ["", "Speed:",
                  f"  inference latency, batch 1: p50 {fmt_seconds(lat['p50_seconds'])}, p90 "
                  f"{fmt_seconds(lat['p90_seconds'])}, p99 {fmt_seconds(lat['p99_seconds'])} ({lat['calls']} calls)",
                  f"  inference throughput, batch 1024: {thr['items_per_second']:,.0f} samples/s",
                  f"  training step, batch {ts['items_per_call']}: p50 {fmt_seconds(ts['p50_seconds'])} "
                  f"({ts['items_per_second']:,.0f} samples/s)"]
    return "\n".join(lines)
