"""DP-SGD on the client (Abadi et al., CCS 2016) through Opacus: per-sample gradients, each clipped to an L2 norm of
C (``--dp-clip``), summed, Gaussian noise of standard deviation z·C added (``--dp-noise`` z, the noise multiplier)
and the sum divided by the expected batch size — Opacus's ``GradSampleModule`` and ``DPOptimizer`` do every step.

What the attacker sees: one such step's gradient on the client's batch (``dp_gradient``; its noise is the client's
secret, a generator seeded from the key seed). What the protection costs: the model trained with DP-SGD for the
utility budget (he_leak.scoring.utility_accuracy: Opacus's ``PrivacyEngine`` with Poisson sampling), and the privacy
it buys: ε at δ = ``DP_DELTA`` from Opacus's RDP accountant for that training's steps and sampling rate
(``epsilon``). The guarantee is per sample of the training set, so ε is the training's; the attacked round is one of
its steps.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from he_leak.errors import ConfigError
from he_leak.models.losses import LOSSES

DP_DELTA = 1e-5


def dp_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, loss: str, noise_multiplier: float,
                max_grad_norm: float, generator: torch.Generator) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """One DP-SGD step's gradient of the batch (``model`` itself is left untouched): (Σ_i clip_C(g_i) + N(0, (zC)²
    I)) / B, with B = len(images) the expected batch size."""
    from opacus.grad_sample import GradSampleModule
    from opacus.optimizers import DPOptimizer

    try:
        with warnings.catch_warnings():  # Opacus warns about its secure RNG on every use: not this testbed's concern
            warnings.simplefilter("ignore")
            module = GradSampleModule(copy.deepcopy(model).train(), loss_reduction="mean")  # hooks need train()
            params = [p for p in module.parameters() if p.requires_grad]
            optimizer = DPOptimizer(torch.optim.SGD(params, lr=0.0), noise_multiplier=noise_multiplier,
                                    max_grad_norm=max_grad_norm, expected_batch_size=len(images),
                                    generator=generator)  # fmt: skip
            optimizer.zero_grad()
            LOSSES[loss](module(images), labels).backward()
            optimizer.pre_step()  # clip, accumulate, add noise, scale: p.grad is the step's gradient
    except (NotImplementedError, ValueError) as err:
        raise ConfigError(f"DP-SGD (Opacus) cannot compute per-sample gradients of this model: {err}") from err
    return tuple(p.grad.detach().clone() for p in params)


def epsilon(*, noise_multiplier: float, sample_rate: float, steps: int, delta: float = DP_DELTA) -> float:
    """ε at ``delta`` of ``steps`` DP-SGD steps at Poisson ``sample_rate`` (Opacus's RDP accountant)."""
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, steps)]
    return float(accountant.get_epsilon(delta=delta))


def private_training(model: nn.Module, optimizer: torch.optim.Optimizer, loader, *, noise_multiplier: float,
                     max_grad_norm: float, generator: torch.Generator):  # fmt: skip
    """(model, optimizer, loader, engine) made private by Opacus's PrivacyEngine (RDP accountant, Poisson sampling
    from the loader's generator, noise from ``generator``)."""
    from opacus import PrivacyEngine

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="rdp")
        model, optimizer, loader = engine.make_private(module=model, optimizer=optimizer, data_loader=loader,
                                                       noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                                                       noise_generator=generator, poisson_sampling=True)  # fmt: skip
    return model, optimizer, loader, engine
