"""Seeded, stratified, order-preserving splits of a label array: the pure
rule behind validation splits (:func:`archbench.data.split.with_validation`)
and digits' test set, on index arrays only.

**The rule** (``stratified-splitmix64-v1``), the same on every machine and
with every library version, because it uses nothing but 64-bit integer
arithmetic defined here:

1. every sample ``i`` (its index in the split being divided) gets the key
   ``mix(base + (i + 1) * 0x9E3779B97F4A7C15 mod 2**64)``, where ``mix`` is
   SplitMix64's finaliser and ``base = mix(seed XOR 0x243F6A8885A308D3)``;
2. within each class the samples are ranked by key (ties, which need a
   64-bit collision, by index);
3. the first ``round_half_up(fraction * n_c)`` of class ``c``'s ``n_c``
   samples are held out, but at least 1 where ``n_c >= 2`` and at most
   ``n_c - 1`` (every class keeps a sample; a class with one sample keeps
   it);
4. both parts keep the original order of the samples.
"""

from __future__ import annotations

import math

import numpy as np

RULE_ID = "stratified-splitmix64-v1"
RULE = ("stratified, seeded, order-preserving: within each class, samples ranked by SplitMix64(seed, index); the "
        "first round_half_up(fraction * n_class) are held out (at least 1 where a class has 2 or more, at most "
        "n_class - 1); both parts keep the original order")

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_SEED_SALT = 0x243F6A8885A308D3


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def split_keys(n: int, seed: int) -> np.ndarray:
    """The ``n`` uint64 ranking keys of ``seed`` (step 1 of the rule)."""
    base = _mix(np.array([(seed ^ _SEED_SALT) & _M64], dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        steps = (np.arange(1, n + 1, dtype=np.uint64) * np.uint64(_GOLDEN))
        return _mix(steps + base)


def held_out_count(n_class: int, fraction: float) -> int:
    """Step 3: how many of a class's ``n_class`` samples are held out."""
    if n_class < 2:
        return 0
    return max(1, min(n_class - 1, math.floor(fraction * n_class + 0.5)))


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, held_out)``: ascending int64 index arrays that partition
    ``range(len(labels))`` by the module's rule."""
    labels = np.asarray(labels, dtype=np.int64)
    keys = split_keys(len(labels), seed)
    held: list[np.ndarray] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)  # ascending
        k = held_out_count(len(members), fraction)
        if k:
            order = np.lexsort((members, keys[members]))  # by key, then by index
            held.append(members[order[:k]])
    out = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[out] = False
    return np.flatnonzero(mask).astype(np.int64), out.astype(np.int64)
