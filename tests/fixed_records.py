"""Deterministic run records for report tests (made here, not by training)."""

import torch

from archbench.config import TrainConfig

CLASSES = ["zero", "one", "two", "three"]
TRAIN = {**TrainConfig().to_dict(), "epochs": 2, "batch_size": 32}


def _measurements(params, flops_inf, peak, latency):
    return {
        "params": {"trainable": params, "non_trainable": 0, "total": params, "buffers": 0,
                   "param_bytes": 4 * params, "buffer_bytes": 0, "raw_weight_bytes": 4 * params},
        "flops": {"forward_per_sample": flops_inf, "forward_macs_per_sample": flops_inf // 2,
                  "forward_other_per_sample": flops_inf // 50, "train_step_batch_size": 32,
                  "train_step": 32 * 3 * flops_inf, "train_step_forward": 32 * flops_inf,
                  "train_step_backward": 64 * flops_inf, "train_step_other": 12 * params + 999,
                  "train_per_sample": 3.0 * flops_inf,
                  "train_step_phases": {
                      "forward": {"matmul_conv": 32 * flops_inf, "other": {"bias": 100, "activation": 200},
                                  "other_total": 300, "total": 32 * flops_inf + 300},
                      "backward": {"matmul_conv": 64 * flops_inf, "other": {"activation": 200},
                                   "other_total": 200, "total": 64 * flops_inf + 200},
                      "optimizer": {"matmul_conv": 0, "other": {"optimizer": 12 * params},
                                    "other_total": 12 * params, "total": 12 * params},
                      "total": {"matmul_conv": 96 * flops_inf, "other": {"bias": 100, "activation": 400,
                                                                         "optimizer": 12 * params},
                                "other_total": 500 + 12 * params, "total": 96 * flops_inf + 500 + 12 * params}},
                  "per_run": {"steps": 20, "matmul_conv": 20 * 96 * flops_inf, "other": 20 * (500 + 12 * params),
                              "total": 20 * (96 * flops_inf + 500 + 12 * params)}},
        "memory": {"train_step": {"peak_bytes": peak, "breakdown": {
            "parameters": 4 * params, "gradients": 4 * params, "optimizer_state": 8 * params, "input": 4096,
            "activations": peak - 16 * params - 4096, "temporaries": 0},
            "activations_saved_bytes": peak - 16 * params - 4096},
            "first_step": {"peak_bytes": peak - 8 * params},
            "estimate": {"params_grads_adam_bytes": 16 * params, "total_bytes": 16 * params + 4096}},
        "saved_size_bytes": {"safetensors": 4 * params + 312, "state_dict": 4 * params + 1400,
                             "onnx": None, "onnx_note": "onnx not installed (pip install archbench[onnx])"},
        "speed": {"inference_latency_batch1": {"p50_seconds": latency, "p99_seconds": 2 * latency},
                  "inference_throughput_batch1024": {"items_per_second": 1024 / (50 * latency)}},
    }


def fixed_record(accuracies=None, n_test=400):
    """Three models, two seeds each, on a 400-image test set: `big` is clearly
    more accurate than `small`; `twin` is `small` with a handful of answers
    changed (no significant difference)."""
    accuracies = accuracies or {"small": (0.80, 0.81), "big": (0.90, 0.91), "twin": (0.805, 0.80)}
    gen = torch.Generator().manual_seed(1234)
    labels = torch.randint(0, len(CLASSES), (n_test,), generator=gen)
    costs = {"small": (1000, 20_000, 200_000, 1e-4), "big": (50_000, 2_000_000, 4_000_000, 5e-4),
             "twin": (1000, 20_000, 200_000, 1e-4)}
    models = {}
    for mi, (name, accs) in enumerate(accuracies.items()):
        units = []
        for seed, acc in enumerate(accs):
            g = torch.Generator().manual_seed(100 * seed + (0 if name == "twin" else mi))
            order = torch.randperm(n_test, generator=g)
            wrong = order[: n_test - round(acc * n_test)]
            pred = labels.clone()
            pred[wrong] = (pred[wrong] + 1) % len(CLASSES)
            history = [{"epoch": e, "train_loss": 1.0 / e + 0.01 * mi, "train_acc": acc - 0.1 / e,
                        "test_loss": 1.1 / e + 0.01 * seed, "test_acc": acc - 0.08 / e,
                        "seconds": 1.0 + mi, "eval_seconds": 0.1} for e in (1, 2)]
            units.append({"seed": seed, "status": "ok", "history": history,
                          "test": {"loss": 0.5 - acc / 2, "accuracy": float((pred == labels).float().mean()),
                                   "predictions": pred.tolist()},
                          "timings": {"train_seconds": 2.0 * (1 + mi), "wall_seconds": 3.0, "steps": 20,
                                      "samples_per_second": 640 / (2.0 * (1 + mi))},
                          "training": {"device": "cpu", "formulation": "fast", "cuda_graphs": False}})
        p, f, peak, lat = costs[name]
        models[name] = {"description": f"model {name}", "measurements": _measurements(p, f, peak, lat),
                        "units": units}
    return {
        "schema": "archbench.run/2", "name": "fixed", "device": "cpu",
        "config": {"models": list(accuracies), "seeds": [0, 1], "dataset": "tiny",
                   "train": {m: dict(TRAIN) for m in accuracies},
                   "sources": {"seeds": "cli", "train": {m: {"epochs": "cli", "batch_size": "file"}
                                                         for m in accuracies}}},
        "environment": {"archbench": "0.1.0", "python": "3.11.7", "torch": "2.13.0+cpu"},
        "dataset": {"name": "tiny", "train_samples": 640, "test_samples": n_test, "verified_sha256": True,
                    "classes": CLASSES, "test_labels": labels.tolist()},
        "models": models,
    }
