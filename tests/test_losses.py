"""Losses (he_leak.models.losses) against float64 references, and every gradient attack run on each loss and on a masked
(partly encrypted) gradient: attacks read the loss and the mask from the Observation."""

import dataclasses

import pytest
import torch
from torch.nn import functional as F

from he_leak.attacks import AttackOptions, make_attack
from he_leak.attacks.labels import recover_labels
from he_leak.data import load_dataset
from he_leak.models import ModelSpec, build_model
from he_leak.models.losses import LOSSES, SIGMOID3
from he_leak.records import Observation
from he_leak.scoring.metrics import match, psnr

LOSS_TOL = 1e-12  # float64 closed forms vs the registry's Φ(z) − yᵀz form
RECOVERY_DB = 40.0  # an attack "recovers" the input at this PSNR (float32 gradients)


def test_losses_match_their_closed_forms():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 3, 5, 3])
    onehot = F.one_hot(y, 6).double()
    assert abs(LOSSES["cross-entropy"](z, y) - F.cross_entropy(z, y)) < LOSS_TOL
    assert abs(LOSSES["mse"](z, y) - 0.5 * ((z - onehot) ** 2).sum(1).mean()) < LOSS_TOL
    for name, link in (("cross-entropy", z.softmax(1)), ("mse", z), ("poly-sigmoid", None)):
        zz = z.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(LOSSES[name](zz, y), zz)
        if link is None:  # the tutorial's polynomial sigmoid
            c0, c1, _, c3 = SIGMOID3
            link = c0 + c1 * z + c3 * z**3
        torch.testing.assert_close(g * len(z), link - onehot, rtol=0, atol=LOSS_TOL)
        torch.testing.assert_close(LOSSES[name].delta(z, y), link - onehot, rtol=0, atol=LOSS_TOL)


def _observation(loss: str, *, model: str = "mlp", activation: str = "square", index: int = 4, batch: int = 1):
    ds = load_dataset("digits")
    x, y = (torch.from_numpy(a) for a in ds.batch(index, batch))
    net = build_model(ModelSpec(name=model, input_shape=ds.shape, hidden=(16,), activation=activation, seed=1))
    grads = torch.autograd.grad(LOSSES[loss](net(x), y), list(net.parameters()))
    obs = Observation(model=net, gradients=tuple(g.detach() for g in grads), input_shape=ds.shape, batch=batch,
                      classes=10, loss=loss)  # fmt: skip
    return obs, x, y


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("model", ["mlp", "logreg"])
def test_single_label_under_every_loss(loss, model):
    for index in range(8):
        obs, _, y = _observation(loss, model=model, index=index)
        assert recover_labels(obs).tolist() == y.tolist(), (loss, model, index)


@pytest.mark.parametrize("loss", ["mse", "poly-sigmoid"])
@pytest.mark.parametrize("attack", ["dlg", "idlg", "analytic"])
def test_attacks_use_the_observed_loss(loss, attack):
    obs, x, _ = _observation(loss)
    rec = make_attack(attack, AttackOptions(iterations=100)).reconstruct(obs)
    assert psnr(rec.inputs.double().numpy(), x.double().numpy()) >= RECOVERY_DB
    # the same gradient read as cross-entropy is a different problem: the loss really is used
    wrong = dataclasses.replace(obs, loss="cross-entropy")
    if attack != "analytic":  # B=1 analytic needs no loss: x = ∂Wᵀ∂b/‖∂b‖² holds for every loss
        rec_wrong = make_attack(attack, AttackOptions(iterations=100)).reconstruct(wrong)
        assert psnr(rec_wrong.inputs.double().numpy(), x.double().numpy()) < RECOVERY_DB


def _masked(obs: Observation, fraction: float, *, seed: int = 0) -> tuple[Observation, Observation]:
    """Hide `fraction` of every tensor's entries: the masked Observation (hidden entries zero) and one whose hidden
    entries are garbage (an attack that ignores the mask is thrown off by it)."""
    gen = torch.Generator().manual_seed(seed)
    masks = tuple(torch.rand(g.shape, generator=gen) >= fraction for g in obs.gradients)
    masks = masks[:-1] + (torch.ones_like(masks[-1]),)  # the output bias stays visible: iDLG/IG read the label there
    zeroed = tuple(g * m for g, m in zip(obs.gradients, masks, strict=True))
    garbage = tuple(torch.where(m, g, 1e3 * torch.randn(g.shape, generator=gen))
                    for g, m in zip(obs.gradients, masks, strict=True))  # fmt: skip
    return (dataclasses.replace(obs, gradients=zeroed, mask=masks),
            dataclasses.replace(obs, gradients=garbage, mask=masks))  # fmt: skip


@pytest.mark.parametrize("attack", ["dlg", "idlg", "ig", "analytic"])
def test_masked_gradient_matching_uses_only_visible_entries(attack):
    obs, x, _ = _observation("cross-entropy", activation="sigmoid", index=2)
    zeroed, garbage = _masked(obs, 0.3)
    opts = AttackOptions(iterations=400 if attack == "ig" else 100, restarts=2 if attack == "ig" else 1)
    floor = 25.0 if attack == "ig" else RECOVERY_DB
    for case in (zeroed, garbage):  # hidden entries must not matter, whatever they hold
        rec = make_attack(attack, opts).reconstruct(case)
        order = match(rec.inputs.numpy(), x.numpy())
        assert psnr(rec.inputs[order].double().numpy(), x.double().numpy()) >= floor, attack


def test_hidden_output_layer_hides_the_label():
    obs, _, _ = _observation("cross-entropy", activation="sigmoid")
    masks = tuple(torch.ones_like(g, dtype=torch.bool) for g in obs.gradients)
    masks = masks[:-2] + tuple(torch.zeros_like(m) for m in masks[-2:])
    hidden = dataclasses.replace(obs, mask=masks, gradients=tuple(g * m for g, m in zip(obs.gradients, masks,
                                                                                       strict=True)))  # fmt: skip
    from he_leak.errors import AttackFailed

    with pytest.raises(AttackFailed, match="hidden"):
        recover_labels(hidden)
