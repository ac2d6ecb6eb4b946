"""Label recovery from the output layer's gradient (iDLG for B=1, counts for a batch)."""

import torch

from he_leak.attacks.labels import label_counts, recover_labels
from he_leak.data import load_dataset
from he_leak.models import ModelSpec, build_model
from he_leak.records import Observation
from he_leak.scenarios.base import shared_gradient


def _obs(model_name: str, index: int, batch: int, labels: torch.Tensor | None = None, **spec) -> Observation:
    ds = load_dataset("digits")
    x, y = ds.batch(index, batch)
    x, y = torch.tensor(x), torch.tensor(y) if labels is None else labels
    model = build_model(ModelSpec(name=model_name, input_shape=ds.shape, classes=10, **spec))
    return Observation(
        model=model, gradients=shared_gradient(model, x, y), input_shape=ds.shape, batch=batch, classes=10
    ), y


def test_single_label_from_bias_gradient() -> None:
    for index in range(10):
        for name in ("lenet", "mlp"):
            obs, y = _obs(name, index, 1)
            assert recover_labels(obs).tolist() == y.tolist()


def test_single_label_without_bias() -> None:
    obs, y = _obs("mlp", 3, 1)
    last = [m for m in obs.model.modules() if isinstance(m, torch.nn.Linear)][-1]
    last.bias = None
    ds = load_dataset("digits")
    x, _ = ds.batch(3, 1)
    grads = shared_gradient(obs.model, torch.tensor(x), y)
    obs = Observation(model=obs.model, gradients=grads, input_shape=ds.shape, batch=1, classes=10)
    assert recover_labels(obs).tolist() == y.tolist()


def test_batch_with_repeated_labels() -> None:
    labels = torch.tensor([3, 3, 3, 7, 7, 1, 0, 0])  # seeded case: repeated labels, classes missing
    obs, _ = _obs("mlp", 0, 8, labels=labels, hidden=(32,))
    counts = label_counts(obs)
    assert int(counts.sum()) == 8
    assert sorted(recover_labels(obs).tolist()) == sorted(labels.tolist())
