"""`ig`: Inverting Gradients (Geiping et al. 2020) — cosine distance + total variation, signed Adam in the box."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from he_leak.attacks.base import ATTACKS, Attack, project
from he_leak.attacks.labels import label_orders, recover_labels
from he_leak.attacks.optim.functional import GradientModel, StackedGradientModels, batched_value_and_grad
from he_leak.attacks.optim.lbfgs_many import share_a_pass
from he_leak.errors import AttackFailed, ConfigError
from he_leak.records import Observation, Reconstruction

# values (R,) and gradients (R×B×…) of the R runs' objectives at xs
Step = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@ATTACKS.register("ig")
class InvertingGradients(Attack):
    """K restarts optimised together through one vmapped forward/backward; the best final loss wins.

    Labels come from the last layer's gradient (as in iDLG), so the attack needs no ground truth. Where the update
    depends on which sample holds which label (FedAvg steps on part of the batch, attacked unrolled), every distinct
    assignment (he_leak.attacks.labels.label_orders, up to 24) is a whole run, and the lowest final objective wins.
    `reconstruct_many` runs the restarts of many observations of one architecture through one vmapped pass: Adam,
    the sign, the schedule and the clamp act element by element, so each run follows its path alone (up to the
    rounding of the batched kernels)."""

    name = "ig"
    default_iterations = 2000
    default_lr = 0.1
    default_tv = 1e-4
    batchable = True

    @property
    def tv(self) -> float:
        return self.options.tv if self.options.tv is not None else self.default_tv

    def check(self, obs: Observation) -> None:
        super().check(obs)
        if self.options.bn_prior and (obs.buffers is None or not obs.buffers.after):
            raise ConfigError("--bn-prior needs the BatchNorm running statistics that travel with the update: a model "
                              "with BatchNorm in --model-mode train whose buffers the attacker sees in the clear")

    def reconstruct(self, obs: Observation) -> Reconstruction:
        o = self.options
        gm = GradientModel(obs, device=o.device, dtype=torch.float32, unroll=o.unroll)
        orders = label_orders(recover_labels(obs).to(o.device), obs, unroll=o.unroll)

        def objective(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return gm.objective(x, y, tv=self.tv, bn_prior=o.bn_prior)

        best: Reconstruction | None = None
        for labels in orders:  # one whole run per assignment of the labels; the lowest final objective wins
            xs = self._start(obs, o.seed)
            failed = self._optimise(xs, lambda z, y=labels: batched_value_and_grad(objective, z, y), jobs=1,
                                    bounds=obs.bounds)  # fmt: skip
            try:
                if failed[0]:
                    raise AttackFailed(failed[0])
                rec = self._pick(obs, xs, gm, labels)
            except AttackFailed:
                if len(orders) == 1:
                    raise
                continue
            best = rec if best is None or rec.loss < best.loss else best
        if best is None:
            raise AttackFailed(f"ig: no restart of any of the {len(orders)} label assignments ended finite")
        best.info["label_orders"] = len(orders)
        return best

    def reconstruct_many(
        self, observations: Sequence[Observation], *, seeds: Sequence[int] | None = None
    ) -> list[Reconstruction | AttackFailed]:
        """Every restart of every observation through one vmapped pass per step, where the observations share an
        architecture, shapes, bounds, loss and masking; else one by one."""
        o = self.options
        seeds = [o.seed] * len(observations) if seeds is None else list(seeds)
        if len(observations) < 2 or not share_a_pass(observations):
            return super().reconstruct_many(observations, seeds=seeds)
        try:
            labels = [recover_labels(obs).to(o.device) for obs in observations]
        except AttackFailed:
            return super().reconstruct_many(observations, seeds=seeds)
        gms = [GradientModel(obs, device=o.device, dtype=torch.float32, unroll=o.unroll) for obs in observations]
        stacked = StackedGradientModels(gms, classes=observations[0].classes)
        k = o.restarts
        owner = torch.arange(len(observations), device=o.device).repeat_interleave(k)
        run_labels = torch.stack(labels).index_select(0, owner)
        xs = torch.cat([self._start(obs, s) for obs, s in zip(observations, seeds, strict=True)]).detach()
        failed = self._optimise(xs, stacked.for_runs(owner, run_labels, self.tv), jobs=len(observations),
                                bounds=observations[0].bounds)  # fmt: skip
        out: list[Reconstruction | AttackFailed] = []
        for j, (obs, gm, lab) in enumerate(zip(observations, gms, labels, strict=True)):
            if failed[j]:
                out.append(AttackFailed(failed[j]))
                continue
            try:
                out.append(self._pick(obs, xs[j * k : (j + 1) * k], gm, lab))
            except AttackFailed as e:
                out.append(e)
        return out

    def _start(self, obs: Observation, seed: int) -> torch.Tensor:
        """The restarts' dummy inputs, uniform in the box from the run's seed (K×B×input_shape)."""
        lo, hi = obs.bounds
        gen = torch.Generator(device="cpu").manual_seed(seed)
        shape = (self.options.restarts, obs.batch, *obs.input_shape)
        return (lo + (hi - lo) * torch.rand(shape, generator=gen)).to(self.options.device)

    def _optimise(self, xs: torch.Tensor, step: Step, *, jobs: int, bounds: tuple[float, float]) -> list[str]:
        """Signed Adam with IG's schedule on every run of xs (in place, clamped to the box); the runs are `jobs`
        observations' restarts, in blocks. Per observation, why it failed ('' if it did not): every one of its
        restarts non-finite."""
        lo, hi = bounds
        xs.requires_grad_(True)
        opt = torch.optim.Adam([xs], lr=self.options.lr if self.options.lr is not None else self.default_lr)
        n = self.iterations
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[int(n * f) for f in (3 / 8, 5 / 8, 7 / 8)],
                                                     gamma=0.1)  # fmt: skip
        failed = [""] * jobs
        for it in range(n):
            losses, grads = step(xs.detach())
            for j in (~torch.isfinite(losses).reshape(jobs, -1).any(1)).nonzero().flatten().tolist():
                failed[j] = failed[j] or f"ig: every restart's loss became non-finite at step {it}"
            if all(failed):
                break
            opt.zero_grad(set_to_none=True)
            xs.grad = torch.nan_to_num(grads).sign()
            opt.step()
            sched.step()
            with torch.no_grad():
                xs.clamp_(lo, hi)
            if it % 25 == 0 or it == n - 1:
                self.report(it + 1, float(torch.nan_to_num(losses, nan=float("inf")).min()))
        xs.requires_grad_(False)
        return failed

    def _pick(self, obs: Observation, xs: torch.Tensor, gm: GradientModel, labels: torch.Tensor) -> Reconstruction:
        """The restart with the lowest final objective (each evaluated alone)."""
        with torch.no_grad():
            final = torch.stack([gm.objective(x, labels, tv=self.tv, bn_prior=self.options.bn_prior)
                                 for x in xs.detach()])  # fmt: skip
        best = int(torch.nan_to_num(final, nan=float("inf")).argmin())
        if not torch.isfinite(final[best]):
            raise AttackFailed("ig: no restart ended with a finite loss")
        return Reconstruction(
            inputs=project(xs[best].detach(), obs).cpu(),
            labels=labels.cpu(),
            iterations=self.iterations,
            loss=float(final[best]),
            info={"restart_losses": [float(v) for v in final]},
        )

