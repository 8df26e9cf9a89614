"""Model registry: names -> factories, plus ``package.module:callable`` refs."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from archbench.errors import ModelError
from archbench.models.blocks import InputTooSmall

DEFAULT_SHAPE = (1, 28, 28)
SHAPE_ARGS = ("input_shape", "num_classes")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., nn.Module]
    description: str = ""
    input_shape: tuple[int, ...] = DEFAULT_SHAPE  # the default (and the shape its description's counts are for)
    num_classes: int = 10
    recipe: dict | None = None      # training options overriding the seed recipe
    expected: dict | None = None    # measured accuracy/time of the recipe (documentation)

    @property
    def adapts(self) -> bool:
        """Whether the factory builds the model for any image shape."""
        return "input_shape" in _shape_args(self.factory)

    @property
    def min_input(self) -> tuple[int, int] | None:
        """The smallest (height, width) the model takes (see min_input_of)."""
        return min_input_of(self.name)


_REGISTRY: dict[str, ModelEntry] = {}
_Factory = TypeVar("_Factory", bound=Callable[..., nn.Module])


def register_model(name: str | None = None, *, description: str = "",
                   input_shape: tuple[int, ...] = DEFAULT_SHAPE, num_classes: int = 10,
                   recipe: dict | None = None, expected: dict | None = None) -> Callable[[_Factory], _Factory]:
    """Decorator registering a model factory under ``name`` (default: the
    function's name). Registering a name twice is an error.

    A factory that adapts to the dataset takes keyword arguments
    ``input_shape`` ((C, H, W)) and ``num_classes``; ``input_shape`` and
    ``num_classes`` here are its defaults (what it builds when called
    without them). A factory that takes neither is called without arguments.
    """

    def deco(fn: _Factory) -> _Factory:
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
    # Fail now, not mid-run. The dataset's shape and class count are not known
    # yet: a spec that does not declare them is checked for them when built.
    try:
        build_from_spec(spec, f"model {name!r}", check_classes="num_classes" in spec)
    except InputTooSmall:
        if "input_shape" in spec:
            raise
    _SPECS[name] = spec
    for key in [k for k in _MIN_INPUT if k[0] == name]:
        del _MIN_INPUT[key]


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
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - user code: a SyntaxError, a sys.exit(), a GeneratorExit, anything
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


def _shape_args(factory: Callable[..., nn.Module]) -> dict[str, bool]:
    """Which of ``input_shape`` and ``num_classes`` the factory takes by name,
    each with whether it must be given (has no default)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable without a signature: called without arguments
        return {}
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return dict.fromkeys(SHAPE_ARGS, False)
    return {p.name: p.default is p.empty for p in params
            if p.name in SHAPE_ARGS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _valid_shape(input_shape: Any, num_classes: Any) -> tuple[tuple[int, int, int] | None, int | None]:
    # Any: the caller's unchecked values; this function checks them.
    def positive(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    if input_shape is not None:
        if not (isinstance(input_shape, (tuple, list)) and len(input_shape) == 3 and all(map(positive, input_shape))):
            raise ModelError(f"input_shape = {input_shape!r} is invalid: expected (channels, height, width), "
                             "three positive integers.")
        input_shape = tuple(input_shape)
    if num_classes is not None and not positive(num_classes):
        raise ModelError(f"num_classes = {num_classes!r} is invalid: expected a positive integer.")
    return input_shape, num_classes


def local_only_models(refs: list[str]) -> list[str]:
    """Models that exist only in this Python process (given as objects, or
    registered by the running script): a worker process cannot rebuild them."""
    return sorted({r for r in refs if r in _OBJECTS
                   or (r in _REGISTRY and _REGISTRY[r].factory.__module__ == "__main__")})


def build_model(ref: str, seed: int, input_shape: tuple[int, ...] | None = None,
                num_classes: int | None = None) -> nn.Module:
    """A unit's model: :func:`create_model` initialised from ``seed`` (torch's
    global RNG is seeded first, as every unit, measurement and probe does)."""
    torch.manual_seed(seed)
    return create_model(ref, input_shape=input_shape, num_classes=num_classes)


def create_model(ref: str, *, input_shape: tuple[int, ...] | None = None,
                 num_classes: int | None = None) -> nn.Module:
    """Build a model from a registry name, a ``package.module:callable``, a
    spec (registered or a ``.toml`` file) or a ``.keras`` file, for images
    of ``input_shape`` (C, H, W) in ``num_classes`` classes (None: the
    model's default, (1, 28, 28) and 10 for the built-in models).

    Registered models and specs are built for the shape; a ``module:callable``
    gets ``input_shape``/``num_classes`` only if its signature names them (or
    takes ``**kwargs``), otherwise it is called without arguments and the
    caller checks what it built with :func:`check_model_io`. A model that
    cannot take the shape raises :class:`InputTooSmall` (a ModelError) naming
    the layer, what it gets, the smallest input the model takes and the fix.
    Parameter initialisation uses the global torch RNG: seed it first for
    reproducibility.
    """
    if not isinstance(ref, str) or not ref:
        raise ModelError(f"model must be a non-empty name or 'module:function', got {ref!r}.")
    shape, classes = _valid_shape(input_shape, num_classes)
    try:
        model = _build(ref, shape, classes)
    except InputTooSmall as exc:  # add the model, the smallest input it takes and the fix
        raise InputTooSmall(_too_small(ref, shape or input_shape_of(ref), exc)) from None
    return materialize_lazy(model, ref, shape or input_shape_of(ref))


def materialize_lazy(model: nn.Module, ref: str, input_shape: Sequence[int]) -> nn.Module:
    """A model with lazy modules (``nn.LazyLinear``, ``nn.LazyConv2d``, ...)
    gets its parameters' shapes from one forward pass on a sample batch (two
    zero images, eval mode, no gradients; the training flag restored), as
    PyTorch's documentation asks before an optimizer is built; the new
    parameters are initialised from torch's global RNG, like every other
    parameter at construction. Models without lazy parameters are untouched."""
    from torch.nn.parameter import is_lazy

    if not any(is_lazy(t) for t in (*model.parameters(), *model.buffers())):
        return model
    p = next((t for t in model.parameters() if not is_lazy(t)), None)
    x = torch.zeros(2, *input_shape, device=p.device if p is not None else "cpu")
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(x)
    except Exception as exc:  # noqa: BLE001 - user code: reported with context
        raise ModelError(f"model {ref!r} has lazy modules, whose shapes come from a first forward pass, and "
                         f"that pass on a batch of {_shape_str(input_shape)} images failed: {_describe(exc)}. "
                         "Give the lazy layers their input sizes (nn.Linear instead of nn.LazyLinear), or make "
                         "the model take these images.") from exc
    finally:
        model.train(training)
    return model


def _build(ref: str, input_shape: tuple[int, int, int] | None, num_classes: int | None,
           check_classes: bool = True) -> nn.Module:
    if ref in _SPECS or is_spec_file(ref):
        from archbench.models.spec import build_from_spec, load_spec_file

        spec = _SPECS[ref] if ref in _SPECS else load_spec_file(ref)[1]
        return build_from_spec(spec, f"model {ref!r}", input_shape=input_shape, num_classes=num_classes,
                               check_classes=check_classes)
    if is_keras_file(ref):
        from archbench.models.keras_models import load_keras_file

        return load_keras_file(ref, input_shape=input_shape, num_classes=num_classes)
    if ref in _OBJECTS:
        factory = _OBJECTS[ref]
    else:
        factory = _import_callable(ref) if ":" in ref else get_entry(ref).factory
    given = {"input_shape": input_shape, "num_classes": num_classes}
    defaults = {"input_shape": DEFAULT_SHAPE, "num_classes": 10}  # for a factory that needs them, when not given
    kwargs = {a: given[a] if given[a] is not None else defaults[a]
              for a, required in _shape_args(factory).items() if given[a] is not None or required}
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        raise ModelError(f"model {ref!r}: calling its factory failed ({exc}); it must need no arguments "
                         "(it may take input_shape and num_classes by name).") from exc
    except ValueError:  # no signature to check: call it and see
        pass
    try:
        with keras_context():  # a factory may build a Keras model: seed Keras' initialisers too
            model = factory(**kwargs)
    except InputTooSmall:
        raise
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - user code: whatever it raises (a BaseException too) is reported
        raise ModelError(f"model {ref!r}: building it failed: its factory raised {_describe(exc)}"
                         + _allocation_hint(exc, factory, kwargs) + ".") from exc
    if "keras" in sys.modules:
        from archbench.models.keras_models import is_keras_model, wrap

        if is_keras_model(model):
            return wrap(model, ref, input_shape=input_shape, num_classes=num_classes)
    if not isinstance(model, nn.Module):
        raise ModelError(f"model {ref!r}: the factory returned {type(model).__name__}, not a torch.nn.Module.")
    return model


def _shape_str(shape: Sequence[int]) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def _too_small(ref: str, shape: Sequence[int], exc: InputTooSmall) -> str:
    msg = f"model {ref!r} cannot take {_shape_str(shape)} images: {exc.detail.rstrip('.')}"
    need = min_input_of(ref, channels=shape[0]) if len(shape) == 3 else None
    if need is not None:
        msg += f"; it needs images of at least {need[0]}x{need[1]}"
    fit = [n for n in list_models() if n != ref and _fits(n, shape)]
    return msg + (f". Choose a model that takes {shape[-2]}x{shape[-1]} images ({', '.join(fit)}) or resize the "
                  "images" if fit else ". Choose a model for smaller images or resize the images") + "."


def _fits(name: str, shape: Sequence[int]) -> bool:
    need = min_input_of(name, channels=shape[0]) if get_entry(name).adapts else None
    return need is not None and need[0] <= shape[-2] and need[1] <= shape[-1]


def adapts(ref: str) -> bool:
    """Whether ``ref`` builds for any image shape: a registered model or a
    ``module:callable`` whose factory takes ``input_shape``, a spec that does
    not declare ``input_shape``. A ``.keras`` file has a fixed input."""
    if ref in _SPECS:
        return "input_shape" not in _SPECS[ref]
    if is_spec_file(ref):
        from archbench.models.spec import load_spec_file

        return "input_shape" not in load_spec_file(ref)[1]
    if is_keras_file(ref):
        return False
    if ref in _OBJECTS:
        return "input_shape" in _shape_args(_OBJECTS[ref])
    factory = _import_callable(ref) if ":" in ref else get_entry(ref).factory
    return "input_shape" in _shape_args(factory)


_MIN_INPUT: dict[tuple[str, int], tuple[int, int] | None] = {}
_LARGEST = 4096  # sizes searched for the smallest input


def min_input_of(ref: str, channels: int = 1) -> tuple[int, int] | None:
    """The smallest (height, width) of ``channels``-channel images the model
    ``ref`` takes; None where unknown (a ``module:callable``, a Keras model)
    or fixed (a model that does not adapt: see ``input_shape_of``).

    Computed, not declared: the model is built on the ``meta`` device (no
    memory, no random numbers drawn) for growing square sizes until it
    builds, then each side is lowered while the other stays at that size. It
    takes any larger image too (pooling and convolutions only ever shrink a
    larger image to a larger or equal map)."""
    key = (ref, channels)
    if is_spec_file(ref):  # a file may change between calls
        return _search_min_input(ref, channels)
    if key not in _MIN_INPUT:
        _MIN_INPUT[key] = _search_min_input(ref, channels)
    return _MIN_INPUT[key]


def _search_min_input(ref: str, channels: int) -> tuple[int, int] | None:
    if is_keras_file(ref) or ":" in ref or ref in _OBJECTS or not adapts(ref):
        return None

    def builds(h: int, w: int) -> bool:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            try:
                _build(ref, (channels, h, w), None, check_classes=False)
            except InputTooSmall:
                return False
        return True

    def lowest(ok: Callable[[int], bool], hi: int) -> int:
        lo = 0  # not ok(lo) (or 0); ok(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if ok(mid):
                hi = mid
            else:
                lo = mid
        return hi

    try:
        side = 1
        while not builds(side, side):
            side *= 2
            if side > _LARGEST:
                return None
        side = lowest(lambda s: builds(s, s), side)
        return lowest(lambda h: builds(h, side), side), lowest(lambda w: builds(side, w), side)
    except ModelError:  # fails for another reason than its size: nothing to say about sizes
        return None


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
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001 - only a hint
        return ""
    big = [(n, name, m) for n, name, m in layers[:2] if n]
    if not big:
        return ""
    return "; its largest layer" + ("s: " if len(big) > 1 else ": ") + ", ".join(
        f"{name or 'the model'} ({type(m).__name__}, {n:,} parameters = {4 * n:,} bytes as float32)"
        for n, name, m in big) + ". Make it smaller"


def input_shape_of(ref: str) -> tuple[int, ...]:
    """The input shape ``ref`` declares (a spec's ``input_shape``), else its
    default ((1, 28, 28) for everything but a registered model registered
    with another). A model that ``adapts`` builds for other shapes too."""
    if ref in _SPECS:
        return tuple(_SPECS[ref].get("input_shape", DEFAULT_SHAPE))
    if is_spec_file(ref):
        from archbench.models.spec import load_spec_file

        return tuple(load_spec_file(ref)[1].get("input_shape", DEFAULT_SHAPE))
    return DEFAULT_SHAPE if is_reference(ref) else get_entry(ref).input_shape


def recipe_of(ref: str) -> dict:
    """The training options a registered model's recipe sets ({} for others)."""
    if is_reference(ref):
        return {}
    return dict(get_entry(ref).recipe or {})


def check_model_io(model: nn.Module, ref: str, input_shape: tuple[int, ...] = DEFAULT_SHAPE,
                   num_classes: int = 10) -> None:
    """Run a 2-sample batch through ``model`` (in eval mode, no grad, state
    restored) and check it maps ``(N, *input_shape)`` to ``(N, num_classes)``."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *input_shape))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - any failure of user code is reported with context
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
    if not out.is_floating_point():
        raise ModelError(
            f"model {ref!r} returns {out.dtype} values (shape {tuple(out.shape)}); expected float logits, one score "
            "per class (the last layer's output, before any argmax, rounding or integer conversion)."
        )
