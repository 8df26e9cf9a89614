"""The report's Per model section: each model's measurements in full
(parameters, saved files, FLOPs, memory, the reference step, latency), its
units' table and its time to result."""

from __future__ import annotations

import statistics

from archbench.records import ModelRecord, flops_partial, lookup
from archbench.report.analysis import MEASURED_OPTIMIZER, MEASURED_PRECISION
from archbench.report.document import Bullets, Heading, Para, Table
from archbench.report.units import fmt_bytes, fmt_count, fmt_latency, fmt_pct, fmt_seconds, fmt_si


def model_section(name: str, entry: ModelRecord) -> list:
    meas = entry.get("measurements") or {}
    blocks: list = [Heading(3, name)]
    if entry.get("description"):
        blocks.append(Para(entry["description"]))
    if meas:
        items = _measurement_items(entry, meas)
        blocks.append(Bullets(items))
    rows: list[tuple[str, ...]] = []
    for u in entry.get("units", []):
        if u.get("status") != "ok":
            rows.append((str(u.get("seed")), "failed: " + u.get("error", "?"), "", "", "", "", "", ""))
            continue
        epochs = [h["seconds"] for h in u.get("history") or []]
        rows.append((str(u["seed"]), fmt_pct(u["test"]["accuracy"]), f"{u['test']['loss']:.4f}",
                     fmt_seconds(u["timings"]["train_seconds"]),
                     (fmt_seconds(epochs[0]) if len(set(epochs)) == 1 else
                      f"{fmt_seconds(min(epochs))}–{fmt_seconds(max(epochs))}") if epochs else "n/a",
                     f"{u['timings']['samples_per_second']:,.0f}",
                     str(lookup(u, "host", "torch_threads") or "n/a"), _load_cell(u.get("host"))))
    if rows:
        blocks.append(Table(("Seed", "Test accuracy", "Test loss", "Train time", "Epoch times", "Samples/s",
                             "Threads", "Load (1 min, start → end)"), rows))
    blocks += _time_to_result(entry)
    return blocks


def _measurement_items(entry: ModelRecord, meas: dict) -> list[str]:
    """One bullet per measured cost, in a fixed order; a cost that failed is
    named with its reason (the others stand)."""
    p, sizes, fl = meas.get("params"), meas.get("saved_size_bytes"), meas.get("flops")
    items: list[str] = []
    if p:
        items.append(f"Parameters: {fmt_count(p['trainable'])} trainable, {fmt_count(p['non_trainable'])} "
                     f"non-trainable; raw weights {fmt_bytes(p['raw_weight_bytes'])}.")
    if sizes:
        items.append("Saved files: " + ", ".join(f"{k} {fmt_bytes(v)} ({fmt_count(v)} B)" for k, v in sizes.items()
                                                 if isinstance(v, int))
                     + (f"; ONNX not measured: {sizes['onnx_note']}" if sizes.get("onnx_note") else "") + ".")
    if fl:
        items += _flops_items(entry, meas, fl)
    if meas.get("memory"):
        items += _memory_items(meas, (fl or {}).get("train_step_batch_size") or lookup(meas, "step", "batch_size"))
    if meas.get("reference"):
        items.append(_reference_text(meas["reference"]))
    if "speed" in meas:
        lat = meas["speed"]["inference_latency_batch1"]
        thr = meas["speed"]["inference_throughput_batch1024"]
        items.append(f"Inference latency at batch 1{_views_text(lat)}: {fmt_latency(lat)}; throughput at "
                     f"batch 1024: {thr['items_per_second']:,.0f} samples/s.")
    for cost, why in (meas.get("errors") or {}).items():
        items.append(f"Not measured — {cost.replace('_', ' ')}: {why}.")
    return items


def _flops_items(entry: ModelRecord, meas: dict, fl: dict) -> list[str]:
    partial = flops_partial(entry)
    items = [
        f"Inference{_views_text(fl)}: {fmt_count(fl['forward_macs_per_sample'])} MACs = "
        f"{fmt_count(fl['forward_per_sample'])} matmul/conv FLOPs per sample"
        + (f", plus {fmt_count(fl['forward_other_per_sample'])} other FLOPs (bias, activations, pooling)"
           if "forward_other_per_sample" in fl else "")
        + (" — partial: " + _uncounted_text(fl.get("forward_uncounted_ops") or fl.get("uncounted_ops"))
           if partial["forward"] else "") + ".",
        f"Training step ({_step_text(meas.get('step'), fl['train_step_batch_size'])}): "
        f"{fmt_count(fl['train_step'])} matmul/conv FLOPs "
        f"(forward {fmt_count(fl['train_step_forward'])}, backward {fmt_count(fl['train_step_backward'])})"
        + (f", plus {fmt_count(fl['train_step_other'])} other FLOPs including the Adam update"
           if "train_step_other" in fl else "")
        + (" — partial: " + _uncounted_text(fl.get("uncounted_ops")) if partial["train_step"] else "") + ".",
    ]
    if "per_run" in fl:
        items.append(f"Whole run: {fmt_si(fl['per_run']['matmul_conv'], 'FLOPs')} matmul/conv + "
                     f"{fmt_si(fl['per_run']['other'], 'FLOPs')} other over "
                     f"{fmt_count(fl['per_run']['steps'])} steps.")
    return items


def _memory_items(meas: dict, batch_size: int | None) -> list[str]:
    mem = meas["memory"]["train_step"]
    items = [
        f"Peak training-step memory at batch {batch_size} ("
        + (f"{str(meas['step'].get('precision'))}, {str(meas['step'].get('optimizer')).split(' (')[0]}"
           if meas.get("step") else f"{MEASURED_PRECISION}, {MEASURED_OPTIMIZER}")
        + f") {fmt_bytes(mem['peak_bytes'])} ("
        + ", ".join(f"{k.replace('_', ' ')} {fmt_bytes(v)}" for k, v in mem["breakdown"].items()) + ")"
        + (f"; first step {fmt_bytes(meas['memory']['first_step']['peak_bytes'])}"
           if "first_step" in meas["memory"] else "")
        + f". The seed notebook's estimate, 4 × params, would say "
        f"{fmt_bytes(meas['memory']['estimate']['params_grads_adam_bytes'])}."]
    if mem.get("cuda_allocator_peak_bytes") is not None:
        items.append(f"CUDA allocator peak during the step: {fmt_bytes(mem['cuda_allocator_peak_bytes'])} "
                     "(includes cuBLAS/cuDNN workspaces).")
    return items + _memory_detail(meas["memory"])


def _time_to_result(entry: ModelRecord) -> list:
    """The wall time from nothing to this model's results, beside its training time."""
    ok = [u for u in entry.get("units", []) if u.get("status") == "ok"]
    measure = entry.get("measure_seconds")
    if not ok or measure is None or any(lookup(u, "timings", "eval_seconds") is None for u in ok):
        return []
    # Seeds trained as one batch (--batch-seeds) share one wall time and one training time: each unit's share.
    batch = [len(lookup(u, "training", "batched_with") or [None]) for u in ok]
    walls = [u["timings"]["wall_seconds"] / k for u, k in zip(ok, batch)]
    train = [u["timings"]["train_seconds"] for u in ok]
    ev = [u["timings"]["eval_seconds"] for u in ok]
    views = lookup(ok[0], "test", "views") or 1
    curve_split = (" of the validation split, then the test set once"
                   if any(h.get("val_acc") is not None for h in ok[0].get("history", [])) else "")
    return [Para(f"Time to result: measuring the costs took {fmt_seconds(measure)}; each unit took "
                 f"{fmt_seconds(statistics.fmean(walls))} on average from start to saved files, of which training "
                 f"{fmt_seconds(statistics.fmean(train))} and evaluation {fmt_seconds(statistics.fmean(ev))} (the "
                 "per-epoch learning curve on one view" + curve_split
                 + (f", the final test on {views} test-time views" if views > 1 else "") + ")"
                 + ("; its seeds trained as one batched model, so wall and training times are each unit's share "
                    "of the batch's" if max(batch) > 1 else "") + ".")]


def _load_cell(h: dict | None) -> str:
    if not h or not h.get("load_start") or not h.get("load_end"):
        return "n/a"
    return f"{h['load_start'][0]:.2f} → {h['load_end'][0]:.2f} ({h['usable_cpus']} cores)"


def _uncounted_text(ops: dict | None) -> str:
    """What a partial FLOP figure leaves out: the ops with no formula."""
    listed = ", ".join(f"`{k}` ×{v}" for k, v in sorted((ops or {}).items()))
    return f"these ops ran and are not counted (no formula): {listed or 'not recorded'}"


def _views_text(d: dict) -> str:
    """ " (10 test-time views)" where evaluation averages several views."""
    views = d.get("inference_views", d.get("views", 1))
    return f" ({views} test-time views, their logits averaged)" if views and views > 1 else ""


def _step_text(desc: dict | None, batch_size: int) -> str:
    """Which step a cost is of (the trained step's recipe, or a record made
    before the step was recorded: archbench's fp32 lean-Adam step)."""
    if not desc:
        return f"batch {batch_size}, fp32, Adam"
    parts = [f"batch {desc.get('batch_size', batch_size)}", str(desc.get("precision", "fp32")),
             str(desc.get("optimizer", "Adam")).split(" (")[0]]
    if desc.get("formulation"):
        parts.append(str(desc["formulation"]).split(" (")[0] + " formulation")
    parts += [str(desc[k]) for k in ("loss",) if desc.get(k)]
    if desc.get("augmentation"):
        parts.append(f"augmentation: {desc['augmentation']}")
    return ", ".join(parts)


def _memory_detail(mem: dict) -> list[str]:
    out = []
    ps = mem.get("per_sample")
    if ps:
        out.append(f"Training-step memory grows by {fmt_bytes(ps['per_sample_bytes'])} per sample over a fixed "
                   f"{fmt_bytes(ps['fixed_bytes'])} (from the peaks at batch {ps['batch_sizes'][0]} and "
                   f"{ps['batch_sizes'][1]}: extrapolate to other batch sizes).")
    inf = [(mem[k]["batch_size"], mem[k]["peak_bytes"]) for k in ("inference_batch1", "inference_eval_batch")
           if mem.get(k)]
    if inf:
        out.append("Inference peak memory: " + ", ".join(f"{fmt_bytes(b)} at batch {n}" for n, b in inf) + ".")
    return out


def _reference_text(ref: dict) -> str:
    """The plain-PyTorch reference step, to relate archbench's numbers to one's own loop."""
    fl, mem = ref["flops"], ref["memory"]["train_step"]
    text = (f"Plain PyTorch reference step (the model as written, torch.optim.Adam in its default "
            f"implementation, fp32, batch {fl['train_step_batch_size']}; not what was trained): "
            f"{fmt_count(fl['train_step'])} matmul/conv + {fmt_count(fl['train_step_other'])} other FLOPs, peak "
            f"memory {fmt_bytes(mem['peak_bytes'])}")
    if lookup(ref, "speed", "train_step"):
        text += f", step time {fmt_latency(ref['speed']['train_step'])}"
    return text + "."
