"""`dlg` (Zhu et al. 2019) and `idlg` (Zhao et al. 2020): gradient matching by L-BFGS, made reliable.

`dlg` optimises dummy data and soft dummy labels jointly; `idlg` first reads the labels from the last layer's
gradient (batches too) and then matches the data only. Both run `dlg_lbfgs` (line search, scale-free objective,
inputs started inside the box, float32 escalated to float64, stopping rule); restarts run one after another until
one converges."""

from __future__ import annotations

import math

import torch

from he_leak.attacks.base import ATTACKS, Attack, project
from he_leak.attacks.labels import recover_labels
from he_leak.attacks.lbfgs_match import DEFAULT_TOL, dlg_lbfgs
from he_leak.errors import AttackFailed
from he_leak.records import Observation, Reconstruction


@ATTACKS.register("dlg")
class DeepLeakage(Attack):
    """DLG: L-BFGS on the squared gradient distance over dummy data and soft dummy labels."""

    name = "dlg"
    default_iterations = 300
    known_labels = False

    def labels(self, obs: Observation) -> torch.Tensor | None:
        return None

    def reconstruct(self, obs: Observation) -> Reconstruction:
        o = self.options
        label = self.labels(obs)
        best: tuple[torch.Tensor, torch.Tensor, int, float] | None = None
        errors: list[str] = []
        total = 0
        for r in range(o.restarts):
            try:
                x, probs, used, loss = dlg_lbfgs(
                    obs.model, obs.gradients, input_shape=obs.input_shape, classes=obs.classes,
                    steps=self.iterations, seed=o.seed * 1000 + r, device=o.device, label=label, batch=obs.batch,
                    bounds=obs.bounds, loss=obs.loss, mask=obs.mask,
                    progress=o.progress,
                )  # fmt: skip
            except AttackFailed as e:
                errors.append(f"restart {r}: {e}")
                continue
            total += used
            if best is None or loss < best[3]:
                best = (x, probs, used, loss)
            if loss < DEFAULT_TOL:
                break
        if best is None:
            raise AttackFailed("; ".join(errors))
        x, probs, _, loss = best
        labels = label if label is not None else probs.argmax(-1)
        return Reconstruction(
            inputs=project(x.float(), obs).cpu(),
            labels=labels.cpu(),
            iterations=total,
            loss=loss if math.isfinite(loss) else math.nan,
            info={"failed_restarts": errors},
        )


@ATTACKS.register("idlg")
class ImprovedDeepLeakage(DeepLeakage):
    """iDLG: labels from the last layer's gradient, then L-BFGS gradient matching on the data alone."""

    name = "idlg"
    known_labels = True

    def labels(self, obs: Observation) -> torch.Tensor | None:
        return recover_labels(obs)
