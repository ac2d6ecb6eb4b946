"""What the audit (he_leak.models.audit) can analyse: a plain chain of Linear/Conv2d layers and activations, each
layer taking the previous one's output. Every other layer is handled or refused here, in one line naming it:

* BatchNorm in eval mode is a fixed per-channel affine map: folded into the Linear/Conv2d before it
  (torch.nn.utils.fusion), which changes neither the equations' unknowns nor their rank;
* BatchNorm in train mode normalises by the batch's statistics, so each sample's equations depend on the other
  samples — the per-sample rank count does not hold: refused (audit it in eval mode);
* GroupNorm, LayerNorm, InstanceNorm normalise each sample by its own statistics: a nonlinear map of the layer's
  input the linear systems do not model — refused; LocalResponseNorm likewise;
* residual additions (a layer whose input is not the previous layer's output), pooling, dropout and anything else
  the chain does not describe — refused.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from he_leak.errors import ConfigError

PASSIVE = (nn.Flatten, nn.Identity)
PER_SAMPLE_NORMS = (nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
REASONS = {
    "batch-train": "normalises by the batch's statistics, so each sample's equations depend on the others and the "
                   "per-sample rank count does not hold (audit it with --model-mode eval, where it is folded)",
    "per-sample": "normalises each sample by its own statistics, a nonlinear map of the layer's input the linear "
                  "systems do not model",
    "lrn": "divides each activation by its neighbours' energy, a nonlinear map the linear systems do not model",
}  # fmt: skip


def _refuse(name: str, module: nn.Module, reason: str) -> ConfigError:
    return ConfigError(f"the audit cannot analyse layer {name} ({type(module).__name__}): it {reason}")


def _reason(module: nn.Module) -> str | None:
    """Why a normalisation layer is refused (None: not a refused normalisation)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
        return REASONS["batch-train"]
    if isinstance(module, PER_SAMPLE_NORMS):
        return REASONS["per-sample"]
    if isinstance(module, nn.LocalResponseNorm):
        return REASONS["lrn"]
    return None


def _calls(model: nn.Module, inputs: torch.Tensor) -> tuple[list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]],
                                                            torch.Tensor]:  # fmt: skip
    """Every leaf module call of one forward pass in order: (name, module, input, output), and the model's output."""
    names = {m: n for n, m in model.named_modules()}
    calls: list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]] = []
    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(lambda mod, i, o: calls.append((names[mod], mod, i[0], o))) for m in leaves]
    try:
        with torch.no_grad():
            out = model(inputs)
    finally:
        for h in hooks:
            h.remove()
    return calls, out


def chain_model(model: nn.Module, inputs: torch.Tensor, *, activations: tuple[type, ...]) -> nn.Module:
    """A float64 copy of `model` whose eval-mode BatchNorms are folded into the layer before them; ConfigError naming
    the first layer the chain does not describe (see the module docstring)."""
    net = copy.deepcopy(model).double()
    calls, out = _calls(net, inputs.double())
    previous = inputs.double()
    folds: list[tuple[str, str]] = []
    for k, (name, module, inp, o) in enumerate(calls):
        if inp.numel() != previous.numel() or not torch.equal(inp.flatten(), previous.flatten()):
            raise _refuse(name, module, "does not take the previous layer's output (a residual addition or a "
                                        "branch): the audit models a plain chain of layers")  # fmt: skip
        previous = o
        reason = _reason(module)
        if reason:
            raise _refuse(name, module, reason)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            before = calls[k - 1] if k else None
            if before is None or not isinstance(before[1], nn.Linear | nn.Conv2d):
                raise _refuse(name, module, "follows no Linear/Conv2d layer to fold its affine map into")
            folds.append((before[0], name))
        elif not isinstance(module, (nn.Linear, nn.Conv2d, *PASSIVE, *activations)):
            raise _refuse(name, module, "is not part of the chain the audit models (Linear/Conv2d layers, "
                                        "activations, Flatten)")  # fmt: skip
    if not calls or not torch.equal(previous.flatten(), out.flatten()):
        raise ConfigError("the audit models a plain chain of layers; the model's output is not its last layer's")
    for layer_name, bn_name in folds:
        layer, bn = net.get_submodule(layer_name), net.get_submodule(bn_name)
        fused = fuse_conv_bn_eval(layer, bn) if isinstance(layer, nn.Conv2d) else fuse_linear_bn_eval(layer, bn)
        _replace(net, layer_name, fused)
        _replace(net, bn_name, nn.Identity())
    return net


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
