"""The seed notebook's training, in Keras, as the reference archbench is timed against.

Standalone (numpy and TensorFlow/Keras only; no archbench, no PyTorch), so it
runs in its own environment, e.g.::

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install 'tensorflow-cpu==2.19.*'
    /tmp/tfvenv/bin/python benchmarks/keras_reference.py

Builds the notebook's MLP (Flatten, Dense 256 relu, Dense 128 relu, Dense 10
softmax) and CNN (Conv2D 16 3x3 relu, MaxPool 2, Conv2D 32 3x3 relu, MaxPool 2,
Flatten, Dense 64 relu, Dense 10 softmax), compiles each with Adam and sparse
categorical cross-entropy, and times ``fit(x/255, y, epochs, batch_size=64,
verbose=0)`` on Debian's Fashion-MNIST files (``--data-dir``, default
/usr/share/datasets/fashion-mnist). Prints one JSON line: seconds per model,
test accuracy, TensorFlow's version and thread settings. An untimed fit of
one batch on a throw-away model warms TensorFlow up first; the timed model
still traces its own training function, as the notebook's fit() does.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--train-limit", type=int, default=None)
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    a = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from tensorflow import keras
    from tensorflow.keras import layers

    d = Path(a.data_dir)
    x_train = read_idx(d / "train-images-idx3-ubyte.gz")[:a.train_limit].astype("float32") / 255.0
    y_train = read_idx(d / "train-labels-idx1-ubyte.gz")[:a.train_limit]
    x_test = read_idx(d / "t10k-images-idx3-ubyte.gz").astype("float32") / 255.0
    y_test = read_idx(d / "t10k-labels-idx1-ubyte.gz")

    def build(name: str) -> keras.Model:
        if name == "mlp":
            net = [keras.Input((28, 28)), layers.Flatten(), layers.Dense(256, activation="relu"),
                   layers.Dense(128, activation="relu"), layers.Dense(10, activation="softmax")]
        else:
            net = [keras.Input((28, 28, 1)), layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(2),
                   layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2), layers.Flatten(),
                   layers.Dense(64, activation="relu"), layers.Dense(10, activation="softmax")]
        m = keras.Sequential(net)
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return m

    out: dict = {"tensorflow": tf.__version__, "keras": keras.__version__,
                 "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                 "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
                 "cpu_count": os.cpu_count(), "epochs": a.epochs, "train_samples": int(len(y_train)),
                 "seconds": {}, "test_accuracy": {}}
    for name in a.models.split(","):
        xs, xt = (x_train[..., None], x_test[..., None]) if name == "cnn" else (x_train, x_test)
        warm = build(name)
        warm.fit(xs[:64], y_train[:64], epochs=1, batch_size=64, verbose=0)
        model = build(name)
        t0 = time.perf_counter()
        model.fit(xs, y_train, epochs=a.epochs, batch_size=64, verbose=0)
        out["seconds"][name] = time.perf_counter() - t0
        out["test_accuracy"][name] = float(model.evaluate(xt, y_test, batch_size=1000, verbose=0)[1])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
