"""Model registry and built-in models."""

from archbench.models.registry import (
    ModelEntry,
    check_model_io,
    create_model,
    get_entry,
    input_shape_of,
    is_reference,
    list_models,
    register_model,
)
from archbench.models import seed as _seed  # noqa: F401  (registers mlp, cnn)
from archbench.models.seed import keras_init_

__all__ = [
    "ModelEntry", "check_model_io", "create_model", "get_entry", "input_shape_of",
    "is_reference", "keras_init_", "list_models", "register_model",
]
