"""Datasets: registry, strict IDX parsing, verification, download."""

from archbench.data.fetch import fetch_dataset
from archbench.data.idx import encode_idx, parse_idx
from archbench.data.loader import Dataset, load_dataset, locate, user_cache_dir
from archbench.data.registry import (
    FASHION_MNIST,
    DataFile,
    DatasetSpec,
    get_dataset_spec,
    list_datasets,
    register_dataset,
)

__all__ = [
    "FASHION_MNIST", "DataFile", "Dataset", "DatasetSpec", "encode_idx", "fetch_dataset",
    "get_dataset_spec", "list_datasets", "load_dataset", "locate", "parse_idx",
    "register_dataset", "user_cache_dir",
]
