"""Model registry and built-in models."""

from archbench.models import seed as _seed  # noqa: F401  (registers mlp, cnn)
from archbench.models import zoo as _zoo  # noqa: F401  (registers logreg, cnn_bn, resnet_small)
from archbench.models.blocks import keras_init_
from archbench.models.registry import (
    ModelEntry,
    check_model_io,
    create_model,
    get_entry,
    input_shape_of,
    is_reference,
    list_models,
    recipe_of,
    register_model,
    register_spec,
)

__all__ = [
    "ModelEntry", "check_model_io", "create_model", "get_entry", "input_shape_of",
    "is_reference", "keras_init_", "list_models", "recipe_of", "register_model", "register_spec",
]
