"""Models are shaped from the data, deterministic in the seed, and refuse inputs they cannot take."""

import pytest
import torch

from he_leak.errors import ConfigError
from he_leak.models import MODELS, ModelSpec, build_model


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 25, 25), (3, 32, 32)])
def test_models_take_every_image_shape(name, shape):
    model = build_model(ModelSpec(name=name, input_shape=shape, classes=7))
    assert model(torch.rand(2, *shape)).shape == (2, 7)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_init_is_deterministic_in_the_seed(name):
    a, b, c = (build_model(ModelSpec(name=name, input_shape=(1, 8, 8), seed=s)) for s in (3, 3, 4))
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_lenet_is_the_dlg_architecture():
    model = build_model(ModelSpec(name="lenet", input_shape=(3, 32, 32), classes=100))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [(12, (5, 5), (s, s)) for s in (2, 2, 1)]
    assert model.fc.in_features == 768
    assert all(p.abs().max() <= 0.5 for p in model.parameters())


def test_mlp_hidden_and_flat_input():
    model = build_model(ModelSpec(name="mlp", input_shape=(100,), hidden=(16, 8), activation="tanh"))
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(100, 16), (16, 8), (8, 10)]


@pytest.mark.parametrize(
    "spec, match",
    [
        (ModelSpec(name="lenet", input_shape=(100,)), "needs image input"),
        (ModelSpec(name="resnet"),
         "known: conv1, convnet, lenet, lenet-bn, logreg, mlp, resnet18, resnet18-bn; or your own"),
        (ModelSpec(name="mlp", activation="gelu"), "unknown activation"),
        (ModelSpec(name="mlp", classes=1), "at least 2 classes"),
    ],
)
def test_bad_specs(spec, match):
    with pytest.raises(ConfigError, match=match):
        build_model(spec)


def test_conv1_width_and_stride():
    """conv1: one 3×3 convolution with `width` kernels and `stride`, then a linear head (Qian's kernel condition)."""
    from he_leak.runner import security_index

    model = build_model(ModelSpec(name="conv1", input_shape=(3, 32, 32), width=5, stride=2))
    conv, head = model[0], model[-1]
    assert (conv.out_channels, conv.stride, conv.kernel_size) == (5, (2, 2), (3, 3))
    assert head.in_features == 5 * 16 * 16
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ConfigError, match="--stride 4"):
        build_model(ModelSpec(name="conv1", stride=4))
    assert security_index(ModelSpec(name="conv1", input_shape=(1, 8, 8), width=1), 1) < -0.3
    assert security_index(ModelSpec(name="lenet"), 1) == 0.0
