"""Model registry and built-in models."""

from archbench.models import seed as _seed  # noqa: F401  (registers mlp, cnn)
from archbench.models import zoo as _zoo  # noqa: F401  (registers logreg, cnn_bn, resnet_small, ...)
from archbench.models.blocks import InputTooSmall, flat_features, keras_init_, trace_shape
from archbench.models.keras_models import keras_input_shape
from archbench.models.registry import (
    ModelEntry,
    adapts,
    build_model,
    check_model_io,
    create_model,
    get_entry,
    input_shape_of,
    is_reference,
    list_models,
    min_input_of,
    recipe_of,
    register_model,
    register_spec,
)

__all__ = [
    "InputTooSmall", "ModelEntry", "adapts", "build_model", "check_model_io", "create_model", "flat_features",
    "get_entry",
    "input_shape_of", "is_reference", "keras_init_", "keras_input_shape", "list_models", "min_input_of",
    "recipe_of", "register_model", "register_spec", "trace_shape",
]
