"""Files keyed by a model's own names: its weights (`--weights`, a state_dict) and a captured update (`--update`).

Weights: a torch `state_dict` saved with `torch.save` (`.pt`, `.pth`; read with `weights_only=True`, so no code in
the file runs) or a `.safetensors` file (the optional extra `safetensors`: `pip install -e .[safetensors]`). Loaded
strictly: every key of the model's state_dict (parameters and buffers, e.g. BatchNorm's running statistics) must be
in the file with its shape, and nothing else; a mismatch is one line naming the missing, unexpected and mis-shaped
keys. Values must be finite.

Updates (docs/design.md, "Captured updates"): per-parameter arrays keyed by the parameter names (an `.npz`, or a
`.pt` holding a dict of tensors), optionally with the model's buffers (state_dict names: the running statistics a
BatchNorm client sends); or the arrays in order, as Flower's `fit()` returns them (an `.npz` of `arr_0 … arr_n`, a
`.pt` list) — in parameter order, or in state_dict order (parameters and buffers, as
`[v.numpy() for v in model.state_dict().values()]` gives them); or one flat vector of every parameter in parameter
order (an `.npy`, an `.npz` with one array, a `.pt` tensor).
"""

from __future__ import annotations

import math
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from he_leak.errors import ConfigError, DataError
from he_leak.text import one_line

WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors")
UPDATE_SUFFIXES = (".npz", ".npy", ".pt", ".pth")
SHOWN = 4  # names listed per kind of mismatch in an error line


def _names(keys: list[str]) -> str:
    more = f" (+{len(keys) - SHOWN} more)" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def read_tensors(path: Path, *, what: str) -> object:
    """The object a .pt/.pth/.safetensors file holds (tensors only, no code), or DataError in one line."""
    if not path.is_file():
        raise DataError(f"{what} {path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ConfigError(f"{what} {path}: reading .safetensors needs the safetensors package: pip install -e "
                              "'.[safetensors]' (or save the state_dict with torch.save as .pt)") from None
        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001  (safetensors raises its own error types)
            raise DataError(f"{what} {path}: not a readable safetensors file ({one_line(e)})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"{what} {path}: not a torch file of tensors ({type(e).__name__}: {one_line(e)}); save it "
                        "with torch.save(model.state_dict(), path)") from None  # fmt: skip


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state_dict file into `model` strictly (see the module docstring)."""
    path = Path(path)
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise ConfigError(f"--weights {path}: give a state_dict file ({', '.join(WEIGHT_SUFFIXES)})")
    state = read_tensors(path, what="--weights")
    if isinstance(state, dict) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        inner = [k for k in ("state_dict", "model_state_dict", "model") if isinstance(state.get(k), dict)]
        hint = f"; it looks like a training checkpoint: save checkpoint[{inner[0]!r}] alone" if inner else ""
        raise DataError(f"--weights {path}: not a state_dict (name → tensor){hint}")
    if not isinstance(state, dict):
        raise DataError(f"--weights {path} holds a {type(state).__name__}, not a state_dict (name → tensor); save "
                        "model.state_dict()")  # fmt: skip
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shaped = [f"{k} {tuple(state[k].shape)} (model {tuple(own[k].shape)})" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]  # fmt: skip
    if missing or unexpected or shaped:
        parts = [f"{label} {_names(keys)}" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shaped)) if keys]  # fmt: skip
        raise DataError(f"--weights {path} does not fit the model: {'; '.join(parts)}; save the state_dict of this "
                        "very model")  # fmt: skip
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise DataError(f"--weights {path}: non-finite values in {_names(bad)}")
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(state[k].to(v.dtype))


def _arrays(path: Path) -> dict[str, np.ndarray] | list[np.ndarray]:
    """The arrays of an update file: named (a dict) or in order (a list)."""
    suffix = path.suffix.lower()
    if suffix not in UPDATE_SUFFIXES:
        raise ConfigError(f"--update {path}: give an .npz, .npy or .pt file (docs/design.md, 'Captured updates')")
    if suffix in (".npz", ".npy"):
        if not path.is_file():
            raise DataError(f"--update {path}: no such file")
        try:
            if suffix == ".npy":
                return [np.load(path, allow_pickle=False)]
            with np.load(path, allow_pickle=False) as data:
                loaded = {k: np.asarray(data[k]) for k in data.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise DataError(f"--update {path}: not a readable numpy file ({one_line(e)})") from None
        ordered = [f"arr_{i}" for i in range(len(loaded))]
        return [loaded[k] for k in ordered] if sorted(loaded) == sorted(ordered) else loaded
    obj = read_tensors(path, what="--update")
    if isinstance(obj, torch.Tensor):
        return [obj.numpy()]
    if isinstance(obj, list | tuple) and all(isinstance(v, torch.Tensor) for v in obj):
        return [v.numpy() for v in obj]
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {str(k): v.numpy() for k, v in obj.items()}
    raise DataError(f"--update {path}: holds a {type(obj).__name__}; give a dict of tensors keyed by parameter names, "
                    "a list in parameter order or one flat tensor")  # fmt: skip


def read_update(model: nn.Module, path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """An update file as (parameters by name, buffers by name — empty when the file holds none), float64, shaped
    like the model's (see the module docstring for the accepted layouts)."""
    path = Path(path)
    arrays = _arrays(path)
    params = dict(model.named_parameters())
    state = model.state_dict()
    buffer_names = [k for k in state if k not in params]
    if isinstance(arrays, list):
        if len(arrays) == 1 and len(params) > 1:  # one flat vector
            arrays = _split(arrays[0], params, path)
        elif len(arrays) == len(params):
            arrays = dict(zip(params, arrays, strict=True))
        elif len(arrays) == len(state):
            arrays = dict(zip(state, arrays, strict=True))
        else:
            raise DataError(f"--update {path} holds {len(arrays)} arrays; the model has {len(params)} parameters "
                            f"({len(state)} state_dict entries with buffers): give one per parameter, in order, "
                            "or name them")  # fmt: skip
    missing = [n for n in params if n not in arrays]
    unexpected = [k for k in arrays if k not in state]
    shaped = [f"{k} {tuple(arrays[k].shape)} (model {tuple(state[k].shape)})" for k in arrays
              if k in state and math.prod(arrays[k].shape) != state[k].numel()]  # fmt: skip
    if missing or unexpected or shaped:
        parts = [f"{label} {_names(keys)}" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shaped)) if keys]  # fmt: skip
        raise DataError(f"--update {path} does not fit the model: {'; '.join(parts)}")
    out = {n: torch.from_numpy(np.asarray(arrays[n], dtype=np.float64).reshape(params[n].shape)) for n in params}
    buffers = {n: torch.from_numpy(np.asarray(arrays[n]).reshape(state[n].shape)) for n in buffer_names if n in arrays}
    bad = [n for n, v in out.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise DataError(f"--update {path}: non-finite values in {_names(bad)}")
    return out, buffers


def _split(flat: np.ndarray, params: dict[str, nn.Parameter], path: Path) -> dict[str, np.ndarray]:
    """A flat vector cut into the parameters, in parameter order."""
    sizes = [p.numel() for p in params.values()]
    if flat.size != sum(sizes):
        raise DataError(f"--update {path}: a flat vector of {flat.size} values; the model has {sum(sizes)} parameter "
                        "entries")  # fmt: skip
    cuts = np.cumsum(sizes)[:-1]
    return dict(zip(params, np.split(flat.reshape(-1), cuts), strict=True))
