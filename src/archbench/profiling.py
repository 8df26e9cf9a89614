"""One model's costs without training: the record that ``archbench profile``
prints and :func:`archbench.profile` returns (the same function makes both,
so they give the same numbers)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any


def profile_record(ref: str, *, device: str = "auto", batch_size: int | None = None, epochs: int | None = None,
                   dataset: str | None = None, data_dir: str | None = None, input_shape: tuple[int, ...] | None = None,
                   num_classes: int | None = None, train_samples: int | None = None, timing: bool = True,
                   files_dir: str | Path | None = None) -> dict[str, Any]:
    """The profile of model ``ref`` (a registry name, ``module:callable``, a
    spec file, or a model registered for the call) with its own recipe, as
    ``archbench run`` would train it: layers, parameters, FLOPs per phase,
    memory, saved sizes and (``timing``) latency, throughput and step time.
    ``dataset`` builds it for that dataset's images and counts its training
    images per epoch; else ``input_shape`` (default: the model's own) and
    ``num_classes`` (default 10), and ``train_samples`` (default 60,000)."""
    from archbench.env import host_snapshot, unit_host
    from archbench.measure import layer_table, measure_model
    from archbench.models import check_model_io, create_model, input_shape_of
    from archbench.resolve import resolve
    from archbench.run.rundir import safe_name
    from archbench.train import resolve_device

    # The model's own recipe (zoo models train in bf16 with AdamW at batch 256, ...), as `run` would train it.
    given: dict[str, Any] = {"models": [ref], "device": device}
    given.update({k: v for k, v in (("batch_size", batch_size), ("epochs", epochs), ("dataset", dataset))
                  if v is not None})
    cfg = resolve(given)
    name = cfg.models[0]  # a spec file is known by its own name, as in `run`
    tcfg = cfg.train_config_for(name)
    dev = resolve_device(device)
    data_card = None
    if dataset is not None:
        from archbench.data import load_data

        data = load_data(cfg.dataset, data_dir)
        shape, classes = tuple(data.image_shape), data.num_classes
        train_samples = train_samples or len(data.train_labels)
        data_card = {k: v for k, v in data.describe().items() if k not in ("files",)}
    else:
        shape, classes = tuple(input_shape or input_shape_of(name)), num_classes or 10
        train_samples = train_samples or 60000
    model = create_model(name, input_shape=shape, num_classes=classes)
    host0 = host_snapshot()
    layers, layers_error = None, None
    with warnings.catch_warnings(record=True) as caught:  # third-party warnings: recorded with the costs
        warnings.simplefilter("always")
        check_model_io(model, name, shape, classes)
        try:  # the per-layer table is one cost among others: its failure is shown, the rest stand
            layers = layer_table(model, shape)
        except Exception as exc:  # noqa: BLE001 - shown in the profile
            layers_error = f"{type(exc).__name__}: {exc}"
    meas = measure_model(model, shape, device=dev, cfg=tcfg, train_samples=train_samples, num_classes=classes,
                         epochs=tcfg.epochs, timing=timing, files_dir=files_dir, files_stem=safe_name(name))
    record: dict[str, Any] = {
        "model": name, "batch_size": tcfg.batch_size, "device": str(dev), "recipe": tcfg.to_dict(),
        "input_shape": list(shape), "num_classes": classes, "layers": layers, "measurements": meas,
    }
    if layers_error:
        record["layers_error"] = layers_error
    if caught:
        meas["warnings"] = list(dict.fromkeys([f"{w.category.__name__}: {str(w.message).splitlines()[0]}"
                                               for w in caught if str(w.message)] + meas.get("warnings", [])))
    record["host"] = unit_host(host0)  # CPU, cores, threads, load at start and end: what the timings ran on
    if data_card is not None:
        record["dataset"] = data_card
    return record
