"""scikit-learn's bundled 8x8 handwritten digits as a dataset
(:func:`load_digits_dataset`; ``load_data("digits")``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from archbench.data.arrays import check_labels
from archbench.data.dataset import Dataset, from_arrays
from archbench.data.registry import DatasetSpec
from archbench.data.storage import Threshold, resolve_threshold
from archbench.data.stratify import RULE as SPLIT_RULE
from archbench.data.stratify import RULE_ID as SPLIT_RULE_ID
from archbench.data.stratify import stratified_split
from archbench.errors import DataError

DIGITS = "digits"
DIGITS_TEST_FRACTION = 0.2
DIGITS_SEED = 0
DIGITS_SCALE = "round(v * 255 / 16), half up: (v * 255 + 8) // 16 for the integer values v = 0..16"


def load_digits_dataset(threshold: Threshold | None = None) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1,797 images of 10 classes,
    bundled inside the scikit-learn wheel: no download).

    Pixels: the integer values 0..16 become uint8 by ``(v * 255 + 8) // 16``
    (round half up of v * 255 / 16: 0 -> 0, 1 -> 16, 8 -> 128, 16 -> 255).
    Split: scikit-learn ships no test set, so a fixed one is made by
    :mod:`archbench.data.stratify`'s rule with fraction 0.2 and seed 0
    (stratified; 359 test / 1,438 train images with scikit-learn's data),
    both parts in the original order. Digits are not mirror-symmetric.
    Needs scikit-learn: ``pip install 'archbench[datasets]'``."""
    threshold = threshold or resolve_threshold()
    try:
        import sklearn
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DataError("dataset 'digits' needs scikit-learn, which is not installed (" + str(exc) + "). Install it "
                        "with: pip install 'archbench[datasets]' (or pip install scikit-learn).") from exc
    bunch = load_digits()
    where = f"scikit-learn {sklearn.__version__} load_digits()"
    values = np.asarray(bunch.images)
    if values.ndim != 3 or values.shape[1:] != (8, 8):
        raise DataError(f"{where}: images have shape {values.shape}; expected (N, 8, 8).")
    if not np.array_equal(values, np.round(values)) or values.min() < 0 or values.max() > 16:
        raise DataError(f"{where}: pixel values are not the integers 0..16 this loader scales ({DIGITS_SCALE}).")
    images = ((values.astype(np.int64) * 255 + 8) // 16).astype(np.uint8)[:, None]
    labels = check_labels(np.asarray(bunch.target), where, "target", 10)
    train_idx, test_idx = stratified_split(labels, DIGITS_TEST_FRACTION, DIGITS_SEED)
    spec = DatasetSpec(name=DIGITS, files=(), classes=tuple(str(d) for d in range(10)), image_shape=(1, 8, 8),
                       description="scikit-learn's 8x8 handwritten digits (UCI optical recognition of handwritten "
                                   "digits, test part): 1,797 images, 10 classes",
                       mirror_symmetric=False)
    arrays = {"train_images": np.ascontiguousarray(images[train_idx]), "train_labels": labels[train_idx],
              "test_images": np.ascontiguousarray(images[test_idx]), "test_labels": labels[test_idx]}
    data_file = Path(sklearn.__file__).parent / "datasets" / "data" / "digits.csv.gz"
    test_split = {"from": f"{where}: its {len(labels)} images divided by archbench", "fraction": DIGITS_TEST_FRACTION,
                  "seed": DIGITS_SEED, "stratified": True, "rule": SPLIT_RULE, "rule_id": SPLIT_RULE_ID}
    return from_arrays(spec, arrays, files={"digits": str(data_file)} if data_file.is_file() else {},
                        source=DIGITS, fmt=f"scikit-learn load_digits ({sklearn.__version__})",
                        details={"scikit_learn": sklearn.__version__, "pixel_scaling": DIGITS_SCALE},
                        test_split=test_split, threshold=threshold)


