"""The imprint attack (Fowl et al., "Robbing the Fed", ICLR 2022): a malicious server's binning layer in front of the
model (he_leak.models.imprint) turns the shared gradient of a whole batch — or of an aggregate over many clients —
into one closed-form estimate per bin: x = (∂W_i − ∂W_{i+1}) / (∂b_i − ∂b_{i+1}), exact for a bin that one sample
fell into, a weighted mean for a bin several fell into.

The attacker uses what it crafted: the first fully connected layer must be a measurement layer (every row the same
vector); its units are ordered by their thresholds (−bias, ascending), the last unit's own row closes the last bin.
It keeps the ``batch`` bins with the largest |∂b_i − ∂b_{i+1}| (empty bins differ only by rounding or CKKS noise)
and projects them into the input box; when fewer bins than samples hold anything, the missing estimates are the mean
of the found ones (collisions lose those samples, and the scoring shows it).
"""

from __future__ import annotations

import torch

from he_leak.attacks.analytic import first_linear
from he_leak.attacks.analytic_batch import visible
from he_leak.attacks.base import ATTACKS, Attack, project
from he_leak.errors import AttackFailed
from he_leak.records import Observation, Reconstruction

# the rows of a measurement layer agree to this relative tolerance (they are set equal; float32 stores them exactly)
SAME_ROW_TOL = 1e-6


def bin_differences(gw: torch.Tensor, gb: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per bin (thresholds ascending): ∂W_i − ∂W_{i+1} and ∂b_i − ∂b_{i+1} (the last bin: its own row)."""
    order = torch.argsort(-bias, stable=True)  # threshold c_i = −b_i, ascending
    gw, gb = gw[order], gb[order]
    dw = torch.cat([gw[:-1] - gw[1:], gw[-1:]])
    db = torch.cat([gb[:-1] - gb[1:], gb[-1:]])
    return dw, db


@ATTACKS.register("imprint")
class Imprint(Attack):
    """Closed form through an imprint layer: one estimate per non-empty bin."""

    name = "imprint"

    def reconstruct(self, obs: Observation) -> Reconstruction:
        layer, wi, bi = first_linear(obs.model)
        weight = layer.weight.detach().double()
        if float((weight - weight[:1]).abs().max()) > SAME_ROW_TOL * float(weight.abs().max()):
            raise AttackFailed("the imprint attack needs a measurement layer first (every row the same, e.g. "
                               "he-aggregate --imprint BINS); this model's first layer has distinct rows")  # fmt: skip
        if not (bool(visible(obs, wi).all()) and bool(visible(obs, bi).all())):
            raise AttackFailed("the imprint attack needs the first layer's whole gradient in the clear")
        dw, db = bin_differences(obs.gradients[wi].detach().double(), obs.gradients[bi].detach().double(),
                                 layer.bias.detach().double())  # fmt: skip
        ranked = torch.argsort(db.abs(), descending=True, stable=True)
        keep = ranked[db[ranked] != 0][: obs.batch]
        if len(keep) == 0:
            raise AttackFailed("every bin's bias-gradient difference is zero: no bin holds a sample")
        estimates = (dw[keep] / db[keep, None]).reshape(len(keep), *obs.input_shape)
        estimates = project(estimates, obs)
        missing = obs.batch - len(keep)
        if missing:
            estimates = torch.cat([estimates, estimates.mean(0, keepdim=True).expand(missing, *obs.input_shape)])
        info = {"bins": int(len(db)), "nonzero_bins": int((db != 0).sum()), "kept": int(len(keep))}
        return Reconstruction(inputs=estimates.to(obs.gradients[wi].dtype), iterations=1, info=info)
