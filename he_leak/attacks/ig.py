"""`ig`: Inverting Gradients (Geiping et al. 2020) — cosine distance + total variation, signed Adam in the box."""

from __future__ import annotations

import torch

from he_leak.attacks.base import ATTACKS, Attack, project
from he_leak.attacks.functional import GradientModel, batched_value_and_grad, total_variation
from he_leak.errors import AttackFailed
from he_leak.records import Observation, Reconstruction


@ATTACKS.register("ig")
class InvertingGradients(Attack):
    """K restarts optimised together through one vmapped forward/backward; the best final loss wins.

    Labels come from the last layer's gradient (as in iDLG), so the attack needs no ground truth."""

    name = "ig"
    default_iterations = 2000
    default_lr = 0.1
    default_tv = 1e-4

    def reconstruct(self, obs: Observation) -> Reconstruction:
        from he_leak.attacks.labels import recover_labels

        o = self.options
        lr = o.lr if o.lr is not None else self.default_lr
        tv = o.tv if o.tv is not None else self.default_tv
        gm = GradientModel(obs, device=o.device, dtype=torch.float32)
        labels = recover_labels(obs).to(o.device)
        lo, hi = obs.bounds
        gen = torch.Generator(device="cpu").manual_seed(o.seed)
        shape = (o.restarts, obs.batch, *obs.input_shape)
        xs = (lo + (hi - lo) * torch.rand(shape, generator=gen)).to(o.device).requires_grad_(True)
        opt = torch.optim.Adam([xs], lr=lr)
        n = self.iterations
        milestones = [int(n * f) for f in (3 / 8, 5 / 8, 7 / 8)]
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)

        def objective(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return gm.cosine(x, y) + tv * total_variation(x)

        losses = torch.full((o.restarts,), float("inf"))
        for step in range(n):
            losses, grads = batched_value_and_grad(objective, xs.detach(), labels)
            if not torch.isfinite(losses).any():
                raise AttackFailed(f"ig: every restart's loss became non-finite at step {step}")
            opt.zero_grad(set_to_none=True)
            xs.grad = torch.nan_to_num(grads).sign()
            opt.step()
            sched.step()
            with torch.no_grad():
                xs.clamp_(lo, hi)
            if step % 25 == 0 or step == n - 1:
                self.report(step + 1, float(losses.min()))
        with torch.no_grad():
            final = torch.stack([objective(x, labels) for x in xs.detach()])
        best = int(torch.nan_to_num(final, nan=float("inf")).argmin())
        if not torch.isfinite(final[best]):
            raise AttackFailed("ig: no restart ended with a finite loss")
        return Reconstruction(
            inputs=project(xs[best].detach(), obs).cpu(),
            labels=labels.cpu(),
            iterations=n,
            loss=float(final[best]),
            info={"restart_losses": [float(v) for v in final]},
        )
