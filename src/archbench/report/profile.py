"""Text rendering of ``archbench profile`` records."""

from __future__ import annotations

from archbench.report.table import text_table
from archbench.report.units import fmt_bytes, fmt_count, fmt_latency, fmt_si


def step_words(desc: dict | None) -> str:
    """One line saying which step a cost is of: optimizer, precision,
    formulation, batch size, loss, augmentation."""
    if not desc:
        return "the default recipe's step (fp32, Adam)"
    return (f"{desc.get('optimizer')}, {desc.get('precision')}, {desc.get('formulation')} formulation, batch "
            f"{desc.get('batch_size')}, {desc.get('loss')}, augmentation: {desc.get('augmentation')}")


def tail_latency(t: dict) -> str:
    """p90/p99 where the samples support them; otherwise the maximum, with the sample count."""
    return fmt_latency(t, with_min=False, max_note=" (p99 needs ≥ 1,000 samples)")


def _phase_rows(ph: dict) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for name in ("data", "forward", "backward", "optimizer", "bookkeeping", "total"):
        d = ph.get(name)
        if d is None or (name in ("data", "bookkeeping") and not d["total"]):
            continue
        rows.append((name, fmt_count(d["matmul_conv"]), fmt_count(d["other_total"]), fmt_count(d["total"]),
                     ", ".join(f"{k} {fmt_si(v)}" for k, v in d["other"].items() if v)))
    return rows


def _memory_line(label: str, st: dict) -> str:
    return (f"  {label}: {fmt_bytes(st['peak_bytes'])} = "
            + " + ".join(f"{k.replace('_', ' ')} {fmt_bytes(v)}" for k, v in st["breakdown"].items() if v))


def render_profile(rec: dict) -> str:
    meas = rec["measurements"]
    lines = _header(rec, meas)
    fl, p = meas.get("flops"), meas.get("params")
    if rec.get("layers") is not None:
        lines += _layer_lines(rec["layers"], fl, p)
    if fl:
        lines += _flops_lines(meas, fl)
    if meas.get("memory"):
        lines += _memory_lines(meas["memory"])
    ref = meas.get("reference")
    if ref:
        rf = ref["flops"]
        lines += ["", "Plain PyTorch reference step (" + step_words(ref.get("step")) + "):",
                  f"  {fmt_count(rf['train_step'])} matmul/conv + {fmt_count(rf['train_step_other'])} other FLOPs"
                  + (" (partial)" if (rf.get("partial") or {}).get("train_step") else "") + "; "
                  + _memory_line("peak", ref["memory"]["train_step"]).strip()
                  + f"; first step {fmt_bytes(ref['memory']['first_step']['peak_bytes'])}"]
        if ref.get("speed"):
            lines.append(f"  step time: {tail_latency(ref['speed']['train_step'])}")
    sz = meas.get("saved_size_bytes")
    if sz:
        lines += ["", "Size: " + (f"raw weights {fmt_bytes(p['raw_weight_bytes'])}; " if p else "") + "files: "
                  + ", ".join(f"{k} {fmt_bytes(v)}" for k, v in sz.items() if isinstance(v, int))
                  + (f"; onnx: {sz['onnx_note']}" if sz.get("onnx_note") else "")]
        if sz.get("files"):
            lines.append("Files kept: " + ", ".join(sz["files"].values()))
    if meas.get("speed"):
        sp = meas["speed"]
        lat, thr, ts = sp["inference_latency_batch1"], sp["inference_throughput_batch1024"], sp["train_step"]
        lines += ["", "Speed:",
                  f"  inference latency, batch 1 ({lat.get('views', 1)} view(s)): {tail_latency(lat)}",
                  f"  inference throughput, batch 1024: {thr['items_per_second']:,.0f} samples/s",
                  f"  training step, batch {ts['items_per_call']}: {tail_latency(ts)} "
                  f"({ts['items_per_second']:,.0f} samples/s)"]
    errors = dict(meas.get("errors") or {})
    if rec.get("layers_error"):
        errors = {"per-layer table": rec["layers_error"], **errors}
    if errors:
        lines += ["", "Not measured (the other costs above stand):"]
        lines += [f"  {k.replace('_', ' ')}: {v}" for k, v in errors.items()]
    return "\n".join(lines)


def _header(rec: dict, meas: dict) -> list[str]:
    lines = [f"archbench profile {rec['model']}  (input {tuple(rec['input_shape'])}, training batch "
             f"{rec['batch_size']}, device {rec['device']})"]
    ds = rec.get("dataset")
    if ds:
        lines.append(f"Built for {ds.get('name')}: {' x '.join(map(str, ds.get('image_shape') or []))} images, "
                     f"{rec.get('num_classes') or ds.get('num_classes')} classes; per-epoch FLOPs over its "
                     f"{ds.get('train_samples'):,} training images.")
    if meas.get("step"):
        lines.append("Costs are those of the step this model trains: " + step_words(meas["step"]) + ".")
    if rec.get("host"):
        h = rec["host"]
        load = " → ".join(f"{x[0]:.2f}" for x in (h.get("load_start"), h.get("load_end")) if x)
        lines.append(f"Host: {h.get('cpu') or 'CPU unknown'}, {h.get('torch_threads')} torch threads on "
                     f"{h.get('usable_cpus')} usable cores; 1-minute load {load or 'unknown'} (start → end)")
    return lines + [""]


def _layer_lines(layers: list[dict], fl: dict | None, p: dict | None) -> list[str]:
    rows = [(r["layer"], r["type"], str(r["output_shape"][1:] if r["output_shape"] else ""), fmt_count(r["params"]),
             fmt_count(r["macs"]), fmt_count(r["matmul_conv_flops"]), fmt_count(r["other_flops"]))
            for r in layers]
    if fl:
        mark = " (partial)" if (fl.get("partial") or {}).get("forward") else ""
        one = fl.get("forward_one_view_per_sample", fl["forward_per_sample"])
        one_other = fl.get("forward_one_view_other_per_sample", fl["forward_other_per_sample"])
        rows.append(("total", "", "", fmt_count(p["total"]) if p else "n/a", fmt_count(one // 2) + mark,
                     fmt_count(one) + mark, fmt_count(one_other) + mark))
    return ["The model as written, one sample (batch 1, eval mode):",
            text_table(("Layer", "Type", "Output", "Params", "MACs", "FLOPs matmul/conv", "FLOPs other"), rows)]


def _flops_lines(meas: dict, fl: dict) -> list[str]:
    partial = fl.get("partial") or {}
    mark = " (partial)" if partial.get("forward") else ""
    views = fl.get("inference_views", 1)
    lines = [f"Inference as evaluated ({views} test-time view{'s' if views != 1 else ''}"
             + (f", {meas['inference']['precision']}, {meas['inference']['formulation']} formulation"
                if meas.get("inference") else "")
             + f"): {fmt_count(fl['forward_macs_per_sample'])} MACs = {fmt_count(fl['forward_per_sample'])} "
             f"matmul/conv FLOPs + {fmt_count(fl['forward_other_per_sample'])} other per sample{mark}"]
    lines += ["", f"Training step at batch {fl['train_step_batch_size']} (FLOPs):"]
    lines.append(text_table(("phase", "matmul/conv", "other", "all", "other by category"),
                            _phase_rows(fl["train_step_phases"])))
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
    return lines


def _memory_lines(mem: dict) -> list[str]:
    st, first = mem["train_step"], mem["first_step"]
    lines = ["", "Memory (measured: the allocator's peak; breakdown by a tensor tracker, scratch = what no op "
                 "returned):",
             _memory_line("training step, steady state", st),
             f"  training step, first: {fmt_bytes(first['peak_bytes'])}",
             f"  saved for backward after the forward pass: {fmt_bytes(st['activations_saved_bytes'])}"]
    if st.get("tracked_peak_bytes"):
        lines.append(f"  tracker's peak at op boundaries: {fmt_bytes(st['tracked_peak_bytes'])}"
                     + (f"; measured by {st['measured_by']}" if st.get("measured_by") else ""))
    ps = mem.get("per_sample")
    if ps:
        lines.append(f"  per sample: {fmt_bytes(ps['per_sample_bytes'])} + fixed {fmt_bytes(ps['fixed_bytes'])} "
                     f"(from batches {ps['batch_sizes'][0]} and {ps['batch_sizes'][1]})")
    lines.append(f"  inference at batch 1: {fmt_bytes(mem['inference_batch1']['peak_bytes'])}")
    if mem.get("inference_eval_batch"):
        ie = mem["inference_eval_batch"]
        lines.append(f"  inference at the evaluation batch ({ie['batch_size']}): {fmt_bytes(ie['peak_bytes'])}")
    lines.append(f"  estimate (4 × params + input + every layer's output): {fmt_bytes(mem['estimate']['total_bytes'])}"
                 " — shown beside the measurement, not instead of it")
    if mem.get("process_peak_rss_bytes"):
        lines.append(f"  process peak RSS: {fmt_bytes(mem['process_peak_rss_bytes'])}")
    return lines
