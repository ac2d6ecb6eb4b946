"""A user's own model: `--model path/to/module.py:factory` or `--model package.module:factory`.

The factory is any callable returning an `nn.Module`. It is given the input shape (C×H×W, or (D,) for flat inputs)
and the number of classes when its signature names them — `input_shape`, and `classes` or `num_classes` (or it
takes `**kwargs`) — and nothing else; a factory that requires another argument is refused in one line. It runs
under `torch.manual_seed(seed)` inside build_model, so a factory that relies on torch's default initialisation gives
the same weights for the same `--seed`; `--weights FILE` replaces them.

The model travels to sweep workers as its reference string (a path and a name: picklable); each worker process
imports the module itself, once (cached per absolute path). A relative path is read from the current folder, as the
sweep's workers inherit it; on a Ray cluster give a path every node can read, or an installed package.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from he_leak.errors import ConfigError
from he_leak.text import one_line

# module.py:factory, or dotted.module:factory (the factory may be a dotted attribute path)
PATTERN = re.compile(r"^(?P<module>[^:]+):(?P<factory>[A-Za-z_][\w.]*)$")
SHAPE_NAMES = ("input_shape",)
CLASS_NAMES = ("classes", "num_classes")


def is_user_model(name: str) -> bool:
    """Whether a model name is a user reference (module:factory) rather than a registered name."""
    return ":" in name


def _import_file(path: Path) -> object:
    """Import a .py file under a private module name derived from its absolute path (cached in sys.modules)."""
    resolved = path.resolve()
    name = "he_leak_user_" + hashlib.sha256(str(resolved).encode()).hexdigest()[:16]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise ConfigError(f"--model {path}: cannot import this file; give a Python file (.py)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001  (any error in the user's code is reported in one line)
        sys.modules.pop(name, None)
        raise ConfigError(f"--model {path}: importing it failed ({type(e).__name__}: {one_line(e)})") from None
    return module


@functools.lru_cache(maxsize=64)
def factory_of(reference: str) -> Callable[..., nn.Module]:
    """The callable a `module.py:factory` / `package.module:factory` reference names (ConfigError naming the fix)."""
    match = PATTERN.match(reference)
    if not match:
        raise ConfigError(f"--model {reference!r}: write path/to/module.py:factory or package.module:factory")
    where, attr = match["module"], match["factory"]
    if where.endswith(".py") or "/" in where or Path(where).is_file():
        path = Path(where)
        if not path.is_file():
            raise ConfigError(f"--model {reference}: no such file {where}; check the path (relative to this folder)")
        module = _import_file(path)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise ConfigError(f"--model {reference}: cannot import {where} ({one_line(e)}); install it or give "
                              "path/to/module.py:factory") from None  # fmt: skip
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"--model {reference}: importing {where} failed ({type(e).__name__}: "
                              f"{one_line(e)})") from None  # fmt: skip
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"--model {reference}: {where} has no {attr!r}; name a function or class defined there")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"--model {reference}: {attr} is not callable; name a function or class returning a model")
    return obj  # type: ignore[return-value]


def arguments(factory: Callable[..., nn.Module], *, input_shape: tuple[int, ...], classes: int) -> dict[str, object]:
    """The keyword arguments the factory accepts among the input shape and the class count (see the docstring)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    kwargs_ok = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    offered = {**{n: tuple(input_shape) for n in SHAPE_NAMES}, **{n: classes for n in CLASS_NAMES}}
    if kwargs_ok:
        return {"input_shape": tuple(input_shape), "classes": classes}
    given = {n: v for n, v in offered.items() if n in params}
    missing = [n for n, p in params.items() if n not in given and p.default is inspect.Parameter.empty
               and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]  # fmt: skip
    if missing:
        raise ConfigError(f"model factory {getattr(factory, '__name__', factory)} requires {', '.join(missing)}; "
                          f"it may take only {', '.join(offered)} (give the others defaults)")  # fmt: skip
    return given


def build_user(reference: str, *, input_shape: tuple[int, ...], classes: int) -> nn.Module:
    """Call the user's factory (errors in it reported in one line) and check that it returned a module."""
    factory = factory_of(reference)
    try:
        model = factory(**arguments(factory, input_shape=input_shape, classes=classes))
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"--model {reference}: the factory failed ({type(e).__name__}: {one_line(e)})") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"--model {reference}: the factory returned {type(model).__name__}, not a torch nn.Module")
    if not any(True for _ in model.parameters()):
        raise ConfigError(f"--model {reference}: the model has no parameters, so it shares no gradient")
    return model.float()


def check_output(model: nn.Module, reference: str, *, input_shape: tuple[int, ...], classes: int) -> None:
    """One forward pass of a sample: the model takes the input shape and outputs one logit per class."""
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, *input_shape))
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"--model {reference} does not take inputs of shape {tuple(input_shape)} "
                          f"({type(e).__name__}: {one_line(e)}); check the model or --data") from None  # fmt: skip
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"--model {reference} outputs {shape} for 2 inputs; it must output 2 × {classes} logits "
                          "(--classes)")  # fmt: skip
