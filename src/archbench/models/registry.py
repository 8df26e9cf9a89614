"""Model registry: names -> factories, plus ``package.module:callable`` refs."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from archbench.errors import ModelError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., nn.Module]
    description: str = ""
    input_shape: tuple[int, ...] = (1, 28, 28)
    num_classes: int = 10
    recipe: dict | None = None      # training options overriding the seed recipe
    expected: dict | None = None    # measured accuracy/time of the recipe (documentation)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str | None = None, *, description: str = "",
                   input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10,
                   recipe: dict | None = None, expected: dict | None = None):
    """Decorator registering a model factory under ``name`` (default: the
    function's name). Registering a name twice is an error."""

    def deco(fn: Callable[..., nn.Module]):
        key = name or fn.__name__
        if ":" in key or not key:
            raise ModelError(f"model name {key!r} is invalid: it must be non-empty and contain no ':'.")
        if key in _REGISTRY and _REGISTRY[key].factory is not fn:
            raise ModelError(f"model {key!r} is already registered (by {_REGISTRY[key].factory!r}).")
        doc = description or (inspect.getdoc(fn) or "").split("\n")[0]
        _REGISTRY[key] = ModelEntry(key, fn, doc, tuple(input_shape), num_classes, recipe, expected)
        return fn

    return deco


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelError(
            f"unknown model {name!r}. Known models: {', '.join(list_models())}; "
            "or give a 'package.module:function' returning an nn.Module."
        ) from None


_SPECS: dict[str, dict] = {}
_OBJECTS: dict[str, Callable[[], nn.Module]] = {}  # models given as Python objects (the API), while a call runs


def register_spec(name: str, spec: dict) -> None:
    """Make a declarative spec (see archbench.models.spec) buildable by name."""
    from archbench.models.spec import build_from_spec

    if name in _REGISTRY:
        raise ModelError(f"spec name {name!r} is a registered model's name; give the spec another name.")
    build_from_spec(spec, f"model {name!r}")  # fail now, not mid-run
    _SPECS[name] = spec


def register_object(name: str, factory: Callable[[], nn.Module]) -> None:
    """Make a zero-argument factory buildable by ``name`` until unregistered."""
    if name in _REGISTRY or name in _SPECS or name in _OBJECTS:
        raise ModelError(f"model name {name!r} is already taken; choose another.")
    _OBJECTS[name] = factory


def unregister_object(name: str) -> None:
    _OBJECTS.pop(name, None)


def is_spec_file(ref: str) -> bool:
    return ref.endswith(".toml")


def is_keras_file(ref: str) -> bool:
    return ref.endswith(".keras")


def is_reference(ref: str) -> bool:
    """True for anything that is not a registry name: module:callable, spec file, registered spec."""
    return ":" in ref or is_spec_file(ref) or is_keras_file(ref) or ref in _SPECS or ref in _OBJECTS


def _import_callable(ref: str) -> Callable[..., nn.Module]:
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ModelError(f"model reference {ref!r} must look like 'package.module:function'.")
    if "keras" not in sys.modules:  # a module that builds Keras models gets Keras on PyTorch
        os.environ.setdefault("KERAS_BACKEND", "torch")
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:  # for this import only: the caller's sys.path is left as it was
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(
            f"model reference {ref!r}: cannot import module {module_name!r} ({exc}). The module is "
            "imported from sys.path, which includes the working directory: run from the directory "
            "that holds it or add its parent to PYTHONPATH."
        ) from exc
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - user code: a SyntaxError, a sys.exit(), anything
        raise ModelError(
            f"model reference {ref!r}: importing module {module_name!r} raised {_describe(exc)}. Fix the "
            f"module (`python -c 'import {module_name}'` shows the traceback)."
        ) from exc
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ModelError(f"model reference {ref!r}: module {module_name!r} has no attribute {attr!r}.") from None
    if not callable(obj):
        raise ModelError(f"model reference {ref!r}: {attr!r} is a {type(obj).__name__}, not a callable.")
    return obj


def keras_context() -> contextlib.AbstractContextManager:
    """Seeds Keras' initialisers while a factory runs, where Keras is loaded."""
    if "keras" not in sys.modules:
        return contextlib.nullcontext()
    from archbench.models.keras_models import keras_seeded

    return keras_seeded()


def create_model(ref: str, **kwargs) -> nn.Module:
    """Build a model from a registry name or a ``package.module:callable``.

    The callable must need no arguments and return an ``nn.Module``. Parameter
    initialisation uses the global torch RNG: seed it first for reproducibility.
    """
    if not isinstance(ref, str) or not ref:
        raise ModelError(f"model must be a non-empty name or 'module:function', got {ref!r}.")
    if ref in _SPECS or is_spec_file(ref):
        from archbench.models.spec import build_from_spec, load_spec_file

        spec = _SPECS[ref] if ref in _SPECS else load_spec_file(ref)[1]
        return build_from_spec(spec, f"model {ref!r}")
    if is_keras_file(ref):
        from archbench.models.keras_models import load_keras_file

        return load_keras_file(ref)
    if ref in _OBJECTS:
        factory = _OBJECTS[ref]
    else:
        factory = _import_callable(ref) if ":" in ref else get_entry(ref).factory
    try:
        with keras_context():  # a factory may build a Keras model: seed Keras' initialisers too
            model = factory(**kwargs)
    except TypeError as exc:
        raise ModelError(f"model {ref!r}: calling its factory failed ({exc}); it must need no arguments.") from exc
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - user code: whatever it raises is reported with context
        raise ModelError(f"model {ref!r}: building it failed: its factory raised {_describe(exc)}"
                         + _allocation_hint(exc, factory, kwargs) + ".") from exc
    if "keras" in sys.modules:
        from archbench.models.keras_models import is_keras_model, wrap

        if is_keras_model(model):
            return wrap(model, ref)
    if not isinstance(model, nn.Module):
        raise ModelError(f"model {ref!r}: the factory returned {type(model).__name__}, not a torch.nn.Module.")
    return model


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r}) (sys.exit() called)"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _is_allocation_failure(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and "allocate" in str(exc))


def _allocation_hint(exc: BaseException, factory: Callable[..., nn.Module], kwargs: dict) -> str:
    """For a factory that failed to allocate its weights: its largest layers,
    found by building it again on the meta device (which allocates nothing)."""
    if not _is_allocation_failure(exc):
        return ""
    try:
        with torch.device("meta"):
            model = factory(**kwargs)
        layers = sorted(((sum(p.numel() for p in m.parameters(recurse=False)), name, m)
                         for name, m in model.named_modules()), key=lambda t: -t[0])
    except (Exception, SystemExit):  # noqa: BLE001 - only a hint
        return ""
    big = [(n, name, m) for n, name, m in layers[:2] if n]
    if not big:
        return ""
    return "; its largest layer" + ("s: " if len(big) > 1 else ": ") + ", ".join(
        f"{name or 'the model'} ({type(m).__name__}, {n:,} parameters = {4 * n:,} bytes as float32)"
        for n, name, m in big) + ". Make it smaller"


def input_shape_of(ref: str) -> tuple[int, ...]:
    if ref in _SPECS:
        return tuple(_SPECS[ref].get("input_shape", (1, 28, 28)))
    return (1, 28, 28) if is_reference(ref) else get_entry(ref).input_shape


def recipe_of(ref: str) -> dict:
    """The training options a registered model's recipe sets ({} for others)."""
    if is_reference(ref):
        return {}
    return dict(get_entry(ref).recipe or {})


def check_model_io(model: nn.Module, ref: str, input_shape=(1, 28, 28), num_classes: int = 10) -> None:
    """Run a 2-sample batch through ``model`` (in eval mode, no grad, state
    restored) and check it maps ``(N, *input_shape)`` to ``(N, num_classes)``."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *input_shape))
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure of user code is reported with context
        raise ModelError(
            f"model {ref!r} fails on a float batch of shape (2, {', '.join(map(str, input_shape))}): "
            f"{_describe(exc)}"
        ) from exc
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(
            f"model {ref!r} maps a (2, {', '.join(map(str, input_shape))}) batch to {shape}; "
            f"expected (2, {num_classes}) logits."
        )
