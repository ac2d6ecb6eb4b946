"""ResNet-18 for the bigger-model experiments (registered in MODELS on import; he_leak.models imports this module).

Layout: the standard ResNet-18 body (He et al. 2016) — four stages of two BasicBlocks, widths 64/128/256/512, the
first block of stages 2-4 with stride 2 and a 1×1 projection shortcut — then global average pooling and one linear
layer: ~11.2M parameters with 10 classes.

Stem: a 3×3 convolution with stride 1 and no max-pool (the CIFAR/Tiny-ImageNet variant that Geiping et al. 2020
invert), not ImageNet's 7×7/2 convolution and 3×3/2 max-pool. That stem is made for 224×224 inputs: on a 64×64 image
it leaves 16×16 maps in stage 1 and 2×2 in stage 4, throws away three quarters of the pixels before any residual
block and makes the max-pool's gradient a sparse selection. The 3×3 stem keeps 64×64 → 8×8 over the four stages, so
every pixel reaches the gradient, at ~16× the FLOPs of the ImageNet stem.

Normalisation: GroupNorm (NORM_GROUPS groups), the usual replacement of BatchNorm in federated learning (Hsieh et
al. 2020) and the setting of gradient-inversion studies that avoid batch statistics. BatchNorm in train mode mixes
the samples of a batch (each sample's gradient depends on the others), which the attacks' per-sample model of the
shared gradient does not describe; BatchNorm in eval mode with the fixed initial running statistics (mean 0,
variance 1) is the identity, so an un-normalised ResNet-18 whose activations grow through the residual additions
at initialisation. GroupNorm normalises each sample on its own: the model is the same in train() and eval(), has no
buffers, is smooth (twice differentiable for DLG's double backward) and runs under torch.func grad/vmap (IG).

Activation: `--activation` (spec.activation; relu gives the standard ResNet, a smooth one such as sigmoid or
softplus suits DLG's second derivatives). Weights: He (fan-out) normal for the convolutions as in torchvision,
PyTorch's default for the linear layer, GroupNorm affine 1/0 — all drawn from build_model's seeded generator.
"""

from __future__ import annotations

import torch
from torch import nn

from he_leak.errors import ConfigError
from he_leak.models.base import ACTIVATIONS, MODELS, ModelSpec, image_shape

WIDTHS = (64, 128, 256, 512)  # channels of the four stages
BLOCKS = 2  # BasicBlocks per stage (ResNet-18)
NORM_GROUPS = 32  # GroupNorm groups (Wu & He 2018's default); divides every width above
MIN_SIDE = 8  # three stride-2 stages: an 8×8 input ends as 1×1 maps in stage 4


def _norm(channels: int, kind: str = "group") -> nn.Module:
    return nn.GroupNorm(NORM_GROUPS, channels) if kind == "group" else nn.BatchNorm2d(channels)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with GroupNorm and the activation, plus the shortcut (a 1×1 projection on a change of
    width or resolution)."""

    def __init__(self, cin: int, cout: int, *, stride: int, activation: str, norm: str = "group") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(cout, norm)
        self.act1 = ACTIVATIONS[activation]()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = _norm(cout, norm)
        self.act2 = ACTIVATIONS[activation]()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), _norm(cout, norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.norm1(self.conv1(x)))
        return self.act2(self.norm2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """Stem (3×3/1 convolution, GroupNorm, activation), four stages of BasicBlocks, global average pool, linear."""

    def __init__(self, spec: ModelSpec, *, norm: str = "group") -> None:
        super().__init__()
        c, h, w = image_shape(spec)
        if min(h, w) < MIN_SIDE:
            raise ConfigError(
                f"image {h}×{w} is too small for model {spec.name!r} (needs at least {MIN_SIDE}×{MIN_SIDE})"
            )
        self.stem = nn.Sequential(
            nn.Conv2d(c, WIDTHS[0], 3, padding=1, bias=False), _norm(WIDTHS[0], norm), ACTIVATIONS[spec.activation]()
        )
        blocks: list[nn.Module] = []
        cin = WIDTHS[0]
        for stage, cout in enumerate(WIDTHS):
            for b in range(BLOCKS):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(BasicBlock(cin, cout, stride=stride, activation=spec.activation, norm=norm))
                cin = cout
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, spec.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


@MODELS.register("resnet18")
def resnet18(spec: ModelSpec, gen: torch.Generator) -> nn.Module:
    """ResNet-18 with a 3×3 stem, GroupNorm and `--activation` (see the module docstring for why)."""
    return _init(ResNet(spec), gen)


@MODELS.register("resnet18-bn")
def resnet18_bn(spec: ModelSpec, gen: torch.Generator) -> nn.Module:
    """ResNet-18 with BatchNorm, as torchvision builds it, on the 3×3 stem: in train mode (--model-mode train) each
    BatchNorm normalises by the batch's statistics and its running buffers travel with the update; in eval mode with
    fresh running statistics it is the identity (up to ε), see the module docstring."""
    return _init(ResNet(spec, norm="batch"), gen)


def _init(model: nn.Module, gen: torch.Generator) -> nn.Module:
    """He (fan-out) normal convolutions from the seeded generator; the rest at PyTorch's defaults."""
    if next(model.parameters()).device.type == "meta":  # shape_model: shapes only, nothing to draw
        return model
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                std = (2.0 / (m.out_channels * m.kernel_size[0] * m.kernel_size[1])) ** 0.5
                m.weight.normal_(0.0, std, generator=gen)
    return model
