"""Datasets: registry, strict IDX parsing, verification, download; every
source through :func:`load_data`; validation splits; the data card."""

from archbench.data.dataset import Dataset
from archbench.data.fetch import fetch_dataset
from archbench.data.idx import encode_idx, parse_idx
from archbench.data.loader import load_dataset, locate, user_cache_dir
from archbench.data.registry import (
    FASHION_MNIST,
    DataFile,
    DatasetSpec,
    get_dataset_spec,
    list_datasets,
    register_dataset,
)
from archbench.data.sources import DIGITS, load_data
from archbench.data.split import with_validation
from archbench.data.storage import ENV_MEMORY_LIMIT, resolve_threshold

__all__ = [
    "DIGITS", "ENV_MEMORY_LIMIT", "FASHION_MNIST", "DataFile", "Dataset", "DatasetSpec", "encode_idx",
    "fetch_dataset", "get_dataset_spec", "list_datasets", "load_data", "load_dataset", "locate", "parse_idx",
    "register_dataset", "resolve_threshold", "user_cache_dir", "with_validation",
]
