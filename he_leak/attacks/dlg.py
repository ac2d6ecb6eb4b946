"""`dlg` (Zhu et al. 2019) and `idlg` (Zhao et al. 2020): gradient matching by L-BFGS, made reliable.

`dlg` optimises dummy data and soft dummy labels jointly; `idlg` first reads the labels from the last layer's
gradient (batches too) and then matches the data only. Both run `dlg_lbfgs` (line search, scale-free objective,
inputs started inside the box, a precision chosen from the device, the attacker-side stop `x_tol`); restarts run one
after another until one reaches the objective's tolerance — with the attacker-side stop on, a run ends above it, so
every restart runs (K restarts cost K runs). `reconstruct_many` runs many observations (and their restarts)
through one batched objective, in one thread (`he_leak.attacks.optim.lockstep`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from he_leak.attacks.base import ATTACKS, Attack, project
from he_leak.attacks.labels import recover_labels
from he_leak.attacks.optim.lbfgs_many import MatchJob, dlg_lbfgs_many, share_a_pass
from he_leak.attacks.optim.lbfgs_match import DEFAULT_TOL, DEFAULT_X_TOL, dlg_lbfgs
from he_leak.attacks.optim.unroll import Simulator, needs_simulation
from he_leak.errors import AttackFailed
from he_leak.records import Observation, Reconstruction

Result = tuple[torch.Tensor, torch.Tensor, int, float] | AttackFailed  # one restart's dlg_lbfgs result or failure


def default_dtype(device: torch.device | str) -> torch.dtype:
    """dlg/idlg's precision, chosen once from the device: on CPU float64 from the start (LeNet/photos, `he-leak bench
    --pairs 10`, 2 threads: 10/10 at ≥ 40 dB, median 13.3 s per run against 20.3 s for float32-then-float64 — the
    float32 phase stalls on rounding at 39–55 dB and the run pays twice); elsewhere (CUDA) float32 first, escalated to
    float64 when it stalls (GPUs run float64 at a fraction of float32's speed)."""
    return torch.float64 if torch.device(device).type == "cpu" else torch.float32


@ATTACKS.register("dlg")
class DeepLeakage(Attack):
    """DLG: L-BFGS on the squared gradient distance over dummy data and soft dummy labels."""

    name = "dlg"
    default_iterations = 300
    known_labels = False
    batchable = True

    def labels(self, obs: Observation) -> torch.Tensor | None:
        return None

    def _match(self, obs: Observation) -> dict[str, Any]:
        """dlg_lbfgs's keyword arguments shared by every restart on `obs`."""
        return dict(
            input_shape=obs.input_shape, classes=obs.classes, steps=self.iterations, device=self.options.device,
            batch=obs.batch, bounds=obs.bounds, loss=obs.loss, x_tol=self.x_tol,
            dtype=self.dtype,
        )  # fmt: skip

    @property
    def dtype(self) -> torch.dtype:
        """AttackOptions.dtype, else the device's policy (`default_dtype`)."""
        return self.options.dtype if self.options.dtype is not None else default_dtype(self.options.device)

    @property
    def x_tol(self) -> float:
        return self.options.x_tol if self.options.x_tol is not None else DEFAULT_X_TOL

    def reconstruct(self, obs: Observation) -> Reconstruction:
        o = self.options
        label = self.labels(obs)
        simulator = Simulator(obs, unroll=o.unroll) if needs_simulation(obs, unroll=o.unroll) else None
        tries: list[Result] = []
        for r in range(o.restarts):
            try:
                tries.append(dlg_lbfgs(
                    obs.model, obs.gradients, seed=o.seed * 1000 + r, label=label, mask=obs.mask,
                    progress=o.progress, simulator=simulator, **self._match(obs),
                ))  # fmt: skip
            except AttackFailed as e:
                tries.append(e)
                continue
            if tries[-1][3] < DEFAULT_TOL:
                break
        return self._pick(obs, label, tries)

    def reconstruct_many(
        self, observations: Sequence[Observation], *, seeds: Sequence[int] | None = None
    ) -> list[Reconstruction | AttackFailed]:
        """Every restart of every observation through one batched objective (`dlg_lbfgs_many`) where they share an
        architecture; the same Reconstructions as `reconstruct` one by one (all restarts run, the same one is
        picked)."""
        if len(observations) < 2:
            return super().reconstruct_many(observations, seeds=seeds)
        o = self.options
        seeds = [o.seed] * len(observations) if seeds is None else list(seeds)
        try:
            if not share_a_pass(observations):
                raise AttackFailed("observations differ in shape, bounds, loss, masking or architecture")
            labels = [self.labels(obs) for obs in observations]
            jobs = [
                MatchJob(model=obs.model, target_grads=obs.gradients, seed=seed * 1000 + r, label=lab, mask=obs.mask)
                for obs, lab, seed in zip(observations, labels, seeds, strict=True)
                for r in range(o.restarts)
            ]
            results = dlg_lbfgs_many(jobs, **self._match(observations[0]))
        except AttackFailed:  # not batchable together (or a label not readable): one by one
            return super().reconstruct_many(observations, seeds=seeds)
        out: list[Reconstruction | AttackFailed] = []
        for k, (obs, label) in enumerate(zip(observations, labels, strict=True)):
            tries: list[Result] = []
            for res in results[k * o.restarts : (k + 1) * o.restarts]:
                tries.append(res)
                if not isinstance(res, AttackFailed) and res[3] < DEFAULT_TOL:
                    break
            try:
                out.append(self._pick(obs, label, tries))
            except AttackFailed as e:
                out.append(e)
        return out

    def _pick(self, obs: Observation, label: torch.Tensor | None, tries: list[Result]) -> Reconstruction:
        """The lowest-loss restart among those tried (AttackFailed when every one failed)."""
        errors = [f"restart {r}: {t}" for r, t in enumerate(tries) if isinstance(t, AttackFailed)]
        done = [t for t in tries if not isinstance(t, AttackFailed)]
        if not done:
            raise AttackFailed("; ".join(errors))
        x, probs, _, loss = min(done, key=lambda t: t[3])
        labels = label if label is not None else probs.argmax(-1)
        return Reconstruction(
            inputs=project(x.float(), obs).cpu(),
            labels=labels.cpu(),
            iterations=sum(t[2] for t in done),
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
