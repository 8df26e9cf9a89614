"""Deterministic run records for report tests (made here, not by training).

`fixed_record` is the small three-model record most tests use. The
`*_record` builders below make the situations the golden reports cover (one
seed, seeds that disagree, a consistent gap over 5 seeds, a loaded machine,
mixed batch sizes and precisions, a merge of runs with different recipes, an
incomplete run); their correctness is built from explicit error sets, so each
seed's discordant counts are exactly what the docstring says.
"""

import torch

from archbench.config import TrainConfig
from archbench.records import merge_records

CLASSES = ["zero", "one", "two", "three"]
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]
TRAIN = {**TrainConfig().to_dict(), "epochs": 2, "batch_size": 32}
CPU = "Test CPU @ 2.00GHz"


def _measurements(params, flops_inf, peak, latency, batch=32, latency_calls=1000):
    act = peak - 16 * params - 128 * batch
    return {
        "params": {"trainable": params, "non_trainable": 0, "total": params, "buffers": 0,
                   "param_bytes": 4 * params, "buffer_bytes": 0, "raw_weight_bytes": 4 * params},
        "flops": {"forward_per_sample": flops_inf, "forward_macs_per_sample": flops_inf // 2,
                  "forward_other_per_sample": flops_inf // 50, "train_step_batch_size": batch,
                  "train_step": batch * 3 * flops_inf, "train_step_forward": batch * flops_inf,
                  "train_step_backward": 2 * batch * flops_inf, "train_step_other": 12 * params + 999,
                  "train_per_sample": 3.0 * flops_inf,
                  "train_step_phases": {
                      "forward": {"matmul_conv": batch * flops_inf, "other": {"bias": 100, "activation": 200},
                                  "other_total": 300, "total": batch * flops_inf + 300},
                      "backward": {"matmul_conv": 2 * batch * flops_inf, "other": {"activation": 200},
                                   "other_total": 200, "total": 2 * batch * flops_inf + 200},
                      "optimizer": {"matmul_conv": 0, "other": {"optimizer": 12 * params},
                                    "other_total": 12 * params, "total": 12 * params},
                      "total": {"matmul_conv": 3 * batch * flops_inf,
                                "other": {"bias": 100, "activation": 400, "optimizer": 12 * params},
                                "other_total": 500 + 12 * params,
                                "total": 3 * batch * flops_inf + 500 + 12 * params}},
                  "per_run": {"steps": 20, "matmul_conv": 20 * 3 * batch * flops_inf,
                              "other": 20 * (500 + 12 * params),
                              "total": 20 * (3 * batch * flops_inf + 500 + 12 * params)}},
        "memory": {"train_step": {"peak_bytes": peak, "breakdown": {
            "parameters": 4 * params, "gradients": 4 * params, "optimizer_state": 8 * params, "input": 128 * batch,
            "activations": act, "temporaries": 0},
            "activations_saved_bytes": act},
            "first_step": {"peak_bytes": peak - 8 * params},
            "estimate": {"params_grads_adam_bytes": 16 * params, "total_bytes": 16 * params + 128 * batch}},
        "saved_size_bytes": {"safetensors": 4 * params + 312, "state_dict": 4 * params + 1400,
                             "onnx": None, "onnx_note": "onnx not installed (pip install archbench[onnx])"},
        "speed": {"inference_latency_batch1": {"calls": latency_calls, "p50_seconds": latency,
                                               "p90_seconds": 1.2 * latency, "p99_seconds": 2 * latency,
                                               "min_seconds": 0.9 * latency, "mean_seconds": 1.1 * latency},
                  "inference_throughput_batch1024": {"items_per_second": 1024 / (50 * latency)},
                  "train_step": {"calls": 50, "p50_seconds": 100 * latency, "p90_seconds": 110 * latency,
                                 "p99_seconds": 130 * latency, "mean_seconds": 104 * latency,
                                 "min_seconds": 95 * latency, "items_per_call": batch,
                                 "items_per_second": batch / (100 * latency)}},
    }


def _host(load_start=0.4, load_end=1.9, threads=2, cores=2, cpu=CPU):
    return {"cpu": cpu, "usable_cpus": cores, "torch_threads": threads, "torch_interop_threads": threads,
            "load_start": [load_start, 0.8, 0.6], "load_end": [load_end, 1.2, 0.8]}


def _environment(threads=2, cores=2, load=0.3, cpu=CPU):
    return {"archbench": "0.1.0", "python": "3.11.7", "platform": "Linux-test", "cpu": cpu, "cpu_count": cores,
            "usable_cpus": cores, "load_average": [load, 0.5, 0.5], "torch": "2.13.0+cpu", "torch_threads": threads}


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
                        "seconds": 1.0 + mi + 0.05 * e, "eval_seconds": 0.1} for e in (1, 2)]
            train_seconds = sum(h["seconds"] for h in history)
            units.append({"seed": seed, "status": "ok", "history": history,
                          "test": {"loss": 0.5 - acc / 2, "accuracy": float((pred == labels).float().mean()),
                                   "predictions": pred.tolist()},
                          "timings": {"train_seconds": train_seconds, "wall_seconds": train_seconds + 1.0,
                                      "steps": 20, "samples_per_second": 1280 / train_seconds},
                          "training": {"device": "cpu", "formulation": "fast", "cuda_graphs": False},
                          "host": _host()})
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


# --- the golden-report situations ------------------------------------------------------------

def error_sets(n_test, shared, own, seed=7):
    """Which test images each (model, seed) gets wrong.

    ``shared[k]``: how many images every model gets wrong at seed k (drawn
    from one pool of hard images); ``own[model][k]``: how many more only that
    model gets wrong (drawn from its own pool, which no other model's errors
    touch). So at seed k, models a and b disagree on exactly own[a][k] +
    own[b][k] images: a is right and b wrong on own[b][k] of them."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_test, generator=gen)
    pools, start = {}, 0
    for name, size in [("", 3 * max(shared) // 2), *((m, 3 * max(v) // 2) for m, v in own.items())]:
        pools[name], start = order[start:start + size], start + size
    assert start <= n_test, "the pools do not fit in the test set"
    wrong: dict[str, list[torch.Tensor]] = {m: [] for m in own}
    for k, h in enumerate(shared):
        hard = pools[""][torch.randperm(len(pools[""]), generator=gen)[:h]]
        for m, counts in own.items():
            if k < len(counts):
                mine = pools[m][torch.randperm(len(pools[m]), generator=gen)[:counts[k]]]
                wrong[m].append(torch.cat([hard, mine]))
    return wrong


def build_record(name, models, n_test, shared, seeds, *, classes=FASHION, config=None, environment=None,
                 dataset_name="fashion-mnist", train_samples=60_000, device="cpu"):
    """A run record from model specs: {model: {"own": [errors per seed], "train": {option overrides},
    "sources": {option: source}, "costs": (params, FLOPs, peak bytes, latency s), "seconds": [train time
    per seed], "hosts": [host per seed], "epochs": n, "failed": {seed: error}, "measured": bool}}."""
    labels = torch.randint(0, len(classes), (n_test,), generator=torch.Generator().manual_seed(99))
    own = {m: s["own"] for m, s in models.items() if s.get("own")}
    wrong = error_sets(n_test, shared, own)
    record_models = {}
    train_cfg, sources = {}, {}
    for mi, (m, spec) in enumerate(models.items()):
        recipe = {**TrainConfig().to_dict(), **spec.get("train", {})}
        train_cfg[m] = recipe
        sources[m] = dict(spec.get("sources", {}))
        units = []
        for k, w in enumerate(wrong.get(m, [])):
            seed = seeds[k]
            if seed in spec.get("failed", {}):
                units.append({"seed": seed, "status": "failed", "error": spec["failed"][seed],
                              "error_type": "TrainingError"})
                continue
            pred = labels.clone()
            pred[w] = (pred[w] + 1) % len(classes)
            acc = 1 - len(w) / n_test
            epochs = recipe["epochs"]
            total = spec["seconds"][k]
            weights = [1.15] + [1.0] * (epochs - 1)  # the first epoch warms up
            per_epoch = [total * x / sum(weights) for x in weights]
            samples = spec.get("samples_per_epoch", train_samples)
            history = [{"epoch": e + 1, "train_loss": 0.6 / (e + 1) + 0.01 * mi, "train_acc": acc - 0.03 / (e + 1),
                        "test_loss": 0.5 / (e + 1) + 0.2, "test_acc": acc - 0.02 / (e + 1) + 0.02 / epochs,
                        "seconds": s, "eval_seconds": 0.4} for e, s in enumerate(per_epoch)]
            units.append({"seed": seed, "status": "ok", "history": history,
                          "test": {"loss": 0.6 - acc / 3, "accuracy": acc, "predictions": pred.tolist()},
                          "timings": {"train_seconds": total, "wall_seconds": total + 2.0,
                                      "steps": epochs * -(-samples // recipe["batch_size"]),
                                      "samples_per_second": epochs * samples / total},
                          "training": {"device": device, "formulation": "fast", "cuda_graphs": False,
                                       "resumed_from_checkpoint": False},
                          "host": spec["hosts"][k] if "hosts" in spec else _host()})
        entry = {"description": spec.get("description", f"model {m}"), "units": units,
                 "measurements": _measurements(*spec["costs"], batch=recipe["batch_size"])
                 if spec.get("measured", True) else None, "recipe": recipe}
        if spec.get("in_record", True):
            record_models[m] = entry
    cfg = {"models": list(models), "seeds": list(seeds), "dataset": dataset_name, "verify": True,
           "train_limit": None, "test_limit": None, "train": train_cfg,
           "sources": {"seeds": "cli", "train": sources}, "notes": []}
    cfg.update(config or {})
    return {
        "schema": "archbench.run/2", "name": name, "device": device, "config": cfg,
        "environment": environment or _environment(),
        "dataset": {"name": dataset_name, "train_samples": train_samples, "test_samples": n_test,
                    "verified": True, "verification": "payload SHA-256", "classes": classes,
                    "test_labels": labels.tolist()},
        "models": record_models,
    }


MLP = (235_146, 469_504, 4_026_368, 73e-6)
CNN = (56_714, 1_413_504, 9_416_704, 208e-6)


def one_seed_record():
    """A quick run (2 epochs on 5,000 images, seed 0): mlp right where cnn is
    wrong on 120 of 2,000 test images, the reverse on 80 (exact McNemar
    p = 0.0057) -- a test-set-only verdict that says nothing about training
    variance."""
    quick = {"epochs": 2}
    return build_record("quick", {
        "mlp": {"own": [80], "train": quick, "sources": {"epochs": "cli"}, "costs": MLP, "seconds": [1.9]},
        "cnn": {"own": [120], "train": quick, "sources": {"epochs": "cli"}, "costs": CNN, "seconds": [6.1]},
    }, n_test=2000, shared=[150], seeds=[0], train_samples=5000,
        config={"train_limit": 5000, "test_limit": 2000})


def disagreeing_seeds_record():
    """Three seeds on 10,000 images where cnn's lead over mlp comes and goes:
    per seed, cnn right and mlp wrong on 501 / 539 / 503 images, the reverse
    on 354 / 376 / 483 (exact McNemar p = 5.6e-07, 7.9e-08, 0.55); the mean
    gap is +1.10 pp."""
    return build_record("disagree", {
        "mlp": {"own": [501, 539, 503], "costs": MLP, "seconds": [17.2, 18.1, 17.6]},
        "cnn": {"own": [354, 376, 483], "costs": CNN, "seconds": [86.0, 90.3, 88.1]},
    }, n_test=10_000, shared=[750, 700, 800], seeds=[0, 1, 2])


def consistent_gap_record():
    """Five seeds on 10,000 images, cnn ahead of mlp by about 1.1 pp at every seed."""
    return build_record("consistent", {
        "mlp": {"own": [470, 465, 480, 460, 475], "costs": MLP, "seconds": [17.2, 17.4, 17.9, 17.3, 17.5]},
        "cnn": {"own": [360, 350, 370, 355, 365], "costs": CNN, "seconds": [86.0, 88.3, 87.1, 86.9, 87.7]},
    }, n_test=10_000, shared=[640, 700, 760, 690, 730], seeds=[0, 1, 2, 3, 4])


def loaded_record():
    """logreg vs cnn on a busy host: the 1-minute load average reached 4.1 on
    2 cores, and logreg's times (one unit took 3x its others) make it look
    4.4x slower to train than cnn though it has 1/90 of the FLOPs."""
    busy = [_host(3.8, 4.1), _host(0.5, 2.0), _host(2.6, 3.9)]
    return build_record("busy", {
        "logreg": {"own": [700, 690, 710], "costs": (7_850, 15_680, 650_000, 9e-6),
                   "seconds": [40.1, 12.3, 60.5], "hosts": busy},
        "cnn": {"own": [120, 130, 125], "costs": CNN, "seconds": [10.2, 9.8, 11.0], "hosts": busy},
    }, n_test=10_000, shared=[800, 810, 790], seeds=[0, 1, 2], environment=_environment(load=3.2))


def mixed_conditions_record():
    """Three zoo-like models with their own recipes: batch 64 / 256 / 128,
    fp32 / bf16 / fp32, adam / adamw / adamw -- peak memory is measured at
    each model's own batch size, so it is compared per sample."""
    return build_record("zoo", {
        "mlp": {"own": [500, 520], "costs": MLP, "seconds": [17.0, 17.5], "train": {"batch_size": 64}},
        "cnn_bn": {"own": [300, 310], "costs": (57_000, 1_420_000, 40_000_000, 260e-6), "seconds": [70.0, 72.0],
                   "train": {"batch_size": 256, "precision": "bf16", "optimizer": "adamw", "epochs": 8},
                   "sources": {"batch_size": "recipe", "precision": "recipe", "optimizer": "recipe",
                               "epochs": "recipe"}},
        "resnet_small": {"own": [250, 240], "costs": (170_000, 24_000_000, 60_000_000, 900e-6),
                         "seconds": [110.0, 112.0],
                         "train": {"batch_size": 128, "optimizer": "adamw", "epochs": 8},
                         "sources": {"batch_size": "recipe", "optimizer": "recipe", "epochs": "recipe"}},
    }, n_test=10_000, shared=[600, 610], seeds=[0, 1])


def merged_record():
    """`archbench compare` of two runs with different recipes: a quick run
    (mlp, 1 epoch on 5,000 images, seeds 0-1, 4 threads) and a full one (cnn,
    2 epochs on 60,000 images, seeds 0-2, 2 threads)."""
    quick = build_record("quick-mlp", {
        "mlp": {"own": [300, 320], "costs": MLP, "seconds": [0.9, 1.0], "train": {"epochs": 1},
                "sources": {"epochs": "cli"}, "samples_per_epoch": 5000,
                "hosts": [_host(threads=4, cores=4), _host(threads=4, cores=4)]},
    }, n_test=2000, shared=[150, 160], seeds=[0, 1], train_samples=5000,
        config={"train_limit": 5000}, environment=_environment(threads=4, cores=4))
    full = build_record("full-cnn", {
        "cnn": {"own": [200, 210, 190], "costs": CNN, "seconds": [35.0, 36.1, 34.8], "train": {"epochs": 2},
                "sources": {"epochs": "cli"}},
    }, n_test=2000, shared=[150, 160, 155], seeds=[0, 1, 2])
    return merge_records([quick, full], "cmp")


def incomplete_record():
    """An interrupted zoo run: five models, three seeds each; mlp finished,
    cnn finished seed 0 only, cnn_bn and resnet_small were measured but
    never trained, dct_cnn was not reached."""
    return build_record("interrupted", {
        "mlp": {"own": [500, 520, 510], "costs": MLP, "seconds": [17.0, 17.5, 17.2]},
        "cnn": {"own": [380], "costs": CNN, "seconds": [87.0]},
        "cnn_bn": {"costs": (57_000, 1_420_000, 10_000_000, 260e-6)},
        "resnet_small": {"costs": (170_000, 24_000_000, 60_000_000, 900e-6)},
        "dct_cnn": {"in_record": False, "costs": CNN},
    }, n_test=10_000, shared=[700, 710, 690], seeds=[0, 1, 2])


SITUATIONS = {
    "one_seed": one_seed_record,
    "disagreeing_seeds": disagreeing_seeds_record,
    "consistent_gap": consistent_gap_record,
    "loaded_machine": loaded_record,
    "mixed_conditions": mixed_conditions_record,
    "merged_recipes": merged_record,
    "incomplete": incomplete_record,
}
