"""Closed-form input recovery from the first fully connected layer with a bias (Phong et al. 2017; Qian, Nassar &
Hansen, "Minimal model structure analysis for input reconstruction in federated learning", arXiv 2010.15718).

For the first linear layer ``z = W x + b`` the mean gradient over a batch is

    ∂W = (1/B) Σ_n δ_n x_nᵀ,    ∂b = (1/B) Σ_n δ_n,      δ_n = ∂ℓ_n/∂z_n,

so with ``x̃_n = [x_n; 1]`` the augmented gradient ``G = [∂W | ∂b] = (1/B) Dᵀ X̃`` has rank ≤ min(h, B).

* B = 1: every row with ∂b_i ≠ 0 is a multiple of x̃, so ``x = ∂Wᵀ ∂b / ‖∂b‖²`` (the least-squares combination of
  the row ratios ``∂W_i / ∂b_i``, which weights rows by ∂b_i² and so ignores the tiny ones).  This holds whatever
  follows the layer: one hidden unit suffices at any depth (Qian et al.).  With a mask, each input entry j uses the
  rows i whose ∂W_ij and ∂b_i are both visible.
* B > 1: every batch is attempted; numbers decide.  ``k`` = min(B, numerical rank of G at RANK_TOL); the inputs
  are sought in the top-k row space, ``X̃ = C V_k`` with C an unknown B×k matrix whose rows satisfy
  ``(C V_k)[:, -1] = 1`` — right whenever h ≥ B (D then has rank B, so G's row space is X̃'s); Qian et al.'s h > B
  is sufficient, and h = B often works (see experiments/batch_vs_hidden.toml).  The rest of the network is known, so
  for a candidate C every δ_n is computable; C is found by Levenberg–Marquardt restarts on
  ``(1/B) D(C)ᵀ C = U_k S_k`` together with the other layers' visible gradient entries
  (:mod:`he_leak.attacks.analytic_batch`), under the Observation's loss (:mod:`he_leak.models.losses`), with labels from
  :mod:`he_leak.attacks.labels` (relaxed to soft labels when the batch mixes classes).  A batch is claimed
  (``recovered`` = B, no ``error``) only when the solve reproduces the gradient to MATCH_TOL *and* the inputs are
  determined: the predicted error of the worst sample, times CLAIM_SIGMAS, is within EXACT_RMS of the box.
  ``info`` reports rank, k, the singular values (relative), the mismatch per restart and the predicted error.

Budgets are counted in evaluations — at most MAX_STARTS restarts of at most ``iterations`` residual evaluations,
fewer once the mismatch reaches the gradient's rounding noise or PLATEAU_STARTS restarts in a row fail to halve it,
one restart when fewer rows than samples are visible (nothing is claimable then) — never in seconds, so a result
does not depend on machine load.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from he_leak.attacks.analytic_batch import BatchProblem, single_threaded, visible
from he_leak.attacks.base import ATTACKS, Attack, first_weight_layer, project, refuse_local_steps
from he_leak.attacks.labels import label_counts, recover_labels
from he_leak.errors import AttackFailed, ConfigError
from he_leak.records import Observation, Reconstruction

# Singular values of G above RANK_TOL·s_max count towards its rank.  A float32 gradient carries rounding noise: the
# measured ‖G32 − G64‖₂ / s_max was 3e-8 … 1e-6 (one-hidden-layer MLPs, digits and faces, B ≤ 16, tanh / sigmoid /
# relu, cross-entropy / mse), i.e. 0.3 … 8 float32 epsilons.  The tolerance sits at one epsilon: a direction kept
# that is mostly noise costs nothing (k is capped at B and the residual decides), a signal direction dropped loses
# the batch (faces B = 8, h = 8 has s_B / s_max ≈ 1e-6, below the old 1e-5).
RANK_TOL = float(torch.finfo(torch.float32).eps)
MATCH_TOL = 1e-5  # relative gradient mismatch under which a batch solution may be claimed exact …
EXACT_RMS = 1e-3  # … if its inputs are also determined to this RMS (fraction of the box; 60 dB), see uncertainty()
# … with this margin: the local (linearised) error estimate was up to 16 dB optimistic at h = B on faces B = 8, where
# distinct minima reproduce the gradient equally well (predicted 1.7e-4 RMS, measured 59.4 dB for the worst image)
CLAIM_SIGMAS = 10.0
TINY_BIAS = 1e-12  # |∂b| below this (relative to the largest row norm) leaves no usable row
MAX_STARTS = 8  # Levenberg–Marquardt restarts for a batch, at most
MAX_NFEV = 1000  # residual evaluations per restart (the attack's default `iterations`)
PLATEAU_STARTS = 3  # stop restarting when this many restarts in a row did not halve the best mismatch …
# … or once the mismatch is at the gradient's rounding noise (this many epsilons of its dtype: the measured float32
# ‖G32 − G64‖₂ / s_max reached 8.2 eps), where no other restart can reproduce the gradient measurably better
NOISE_EPS = 8
SPARSE_TRIES = 4000  # random row subsets tried when looking for sparse δ's (ReLU-like layers)
SPARSE_ROW_TOL = 1e-5  # rows of U S shorter than this fraction of the longest are left out of the sparse search


def first_linear(model: nn.Module) -> tuple[nn.Linear, int, int]:
    """The first nn.Linear (with bias) of `model` and the indices of its weight and bias gradients."""
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            raise AttackFailed(
                "the analytic attack needs a fully connected first layer; "
                f"this model starts with {type(module).__name__}"
            )
        if isinstance(module, nn.Linear):
            if module.bias is None:
                raise AttackFailed("the analytic attack needs a bias in the first linear layer (x = ∂W_i / ∂b_i)")
            index = {id(p): i for i, p in enumerate(model.parameters())}
            return module, index[id(module.weight)], index[id(module.bias)]
    raise AttackFailed("the analytic attack needs a fully connected layer; the model has no nn.Linear")


def single_input(
    gw: torch.Tensor, gb: torch.Tensor, seen: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """B=1: the least-squares x of ∂W = ∂b xᵀ, entry by entry over the visible pairs (∂W_ij, ∂b_i):
    x_j = Σ_i ∂b_i ∂W_ij / Σ_i ∂b_i² (all rows when `seen` is None, i.e. ∂Wᵀ∂b / ‖∂b‖²).  Returns x and the mask of
    entries that some visible row determines."""
    seen = torch.ones_like(gw, dtype=torch.bool) if seen is None else seen
    weights = torch.where(seen, gb[:, None], torch.zeros_like(gw))
    den = (weights * weights).sum(0)
    determined = den > (TINY_BIAS * float(gw.norm())) ** 2
    if not bool(determined.any()):
        raise AttackFailed("no visible row of the first layer has a non-zero bias gradient: no row isolates the input")
    x = (weights * gw).sum(0) / torch.where(determined, den, torch.ones_like(den))
    return x, determined


def project_if_exact(x: torch.Tensor, obs: Observation) -> tuple[torch.Tensor, bool]:
    """Box + quantum projection, applied only when it moves no value by more than a quarter step (or 1e-4)."""
    p = project(x, obs)
    step = obs.quantum / 4 if obs.quantum else 1e-4
    if float((p - x).abs().max()) <= step:
        return p, True
    return x, False


def _starts(
    g: torch.Tensor, prob: BatchProblem, count: int, seed: int, bounds: tuple[float, float]
) -> list[np.ndarray]:
    """Initial C's: B rows of G divided by their bias entry (each an affine mix of the inputs, with weights
    δ_ni / Σ_n δ_ni), random subsets of the most plausible rows, plus a little noise; mapped to the free coordinates
    t.  Plausible: inside the input box first (in order of |∂b|), then by distance from it — when the batch mixes
    classes the δ's differ in sign, some ∂b_i nearly cancel and their ratio rows lie far outside the box (faces #98,
    B = 4: every restart from the |∂b| order alone ended at mismatch ≥ 1e-2)."""
    rng = np.random.default_rng(seed)
    gb = g[:, -1]
    order = torch.argsort(gb.abs(), descending=True)
    usable = order[gb[order].abs() > TINY_BIAS * float(g.norm())]
    if len(usable) == 0:
        raise AttackFailed("every visible bias-gradient entry of the first layer is zero: no row isolates an input")
    ratios = g[usable] / gb[usable, None]
    lo, hi = bounds
    outside = ((lo - ratios[:, :-1]).clamp(min=0) + (ratios[:, :-1] - hi).clamp(min=0)).pow(2).mean(1).sqrt()
    keep = torch.argsort(outside, stable=True)
    ratios = torch.cat([ratios[keep, :-1].clamp(lo, hi), ratios[keep, -1:]], dim=1)
    coeff = ratios @ prob.v.T  # coordinates of each (clamped) ratio row in the row space
    out = []
    b, k = prob.b, prob.k
    for n in range(count):
        pool = min(len(usable), max(b, (n // 4 + 1) * b))
        pick = rng.choice(pool, size=b, replace=pool < b)
        c = coeff[torch.as_tensor(pick)].numpy() + (0 if n == 0 else 0.05 * rng.standard_normal((b, k)))
        out.append(prob.to_free(c))
    return out


def _sparse_start(us: torch.Tensor, prob: BatchProblem, seed: int) -> np.ndarray | None:
    """For ReLU-like layers (k = B): δ_n vanishes on the units inactive for sample n, so the columns w_n of C⁻¹
    (where D = B·C⁻ᵀ(U S)ᵀ) are null vectors of many rows of U S at once.  Random B-1 row subsets give candidate
    null vectors; those that zero further rows are kept, refined on their whole zero set, and B distinct ones give C."""
    b = prob.b
    a = us.numpy()
    norms = np.linalg.norm(a, axis=1)
    keep = norms > SPARSE_ROW_TOL * norms.max()
    a = a[keep] / norms[keep, None]
    if prob.k != b or len(a) < b:
        return None
    rng = np.random.default_rng(seed)
    subsets = np.stack([rng.choice(len(a), size=b - 1, replace=False) for _ in range(SPARSE_TRIES)])
    w = np.linalg.svd(a[subsets])[2][:, -1, :]  # tries × B null vectors
    zeros = np.abs(w @ a.T) < 1e-6
    found: list[np.ndarray] = []
    for n in np.argsort(-zeros.sum(1), kind="stable"):
        if zeros[n].sum() < b + 1:  # B-1 chosen rows and at least two more
            break
        vec = np.linalg.svd(a[zeros[n]])[2][-1]
        if all(abs(vec @ f) < 1 - 1e-6 for f in found):
            found.append(vec)
        if len(found) == b:
            break
    if len(found) < b:
        return None
    c = np.linalg.inv(np.stack(found, axis=1))
    c = c / (c @ prob.v[:, -1].numpy())[:, None]
    return prob.to_free(c)


def _exact_rms(obs: Observation) -> float:
    """The input precision a claim needs: EXACT_RMS of the box, or a tenth of the quantum (so that rounding to the
    grid is right for all but ~1e-6 of the entries)."""
    rms = EXACT_RMS * (obs.bounds[1] - obs.bounds[0])
    return min(rms, obs.quantum / 10) if obs.quantum else rms


def _plateaued(history: list[float]) -> bool:
    """The last PLATEAU_STARTS restarts did not halve the best mismatch of the restarts before them."""
    if len(history) <= PLATEAU_STARTS:
        return False
    return min(history[-PLATEAU_STARTS:]) > min(history[:-PLATEAU_STARTS]) / 2


@ATTACKS.register("analytic")
class Analytic(Attack):
    """Closed-form recovery from the first fully connected layer (exact for B=1; a batch is attempted in the row
    space of the gradient and claimed only when it reproduces the gradient and that determines the inputs)."""

    name = "analytic"
    default_iterations = MAX_NFEV

    def check(self, obs: Observation) -> None:
        """Refused before it runs: a first weight layer that is not fully connected (naming it), several local
        steps (the closed form inverts one gradient)."""
        super().check(obs)
        first = first_weight_layer(obs.model)
        if first is not None and not isinstance(first[1], nn.Linear):
            raise ConfigError(f"the analytic attack needs a fully connected first layer; layer {first[0]} is "
                              f"{type(first[1]).__name__}: use dlg, idlg or ig")  # fmt: skip
        refuse_local_steps(self.name, obs)

    def reconstruct(self, obs: Observation) -> Reconstruction:
        start = time.perf_counter()
        layer, iw, ib = first_linear(obs.model)
        gw, gb = obs.gradients[iw].double(), obs.gradients[ib].double()
        if gw.shape[1] != math.prod(obs.input_shape):
            raise AttackFailed(
                f"the first linear layer takes {gw.shape[1]} inputs but the input has {math.prod(obs.input_shape)}"
            )
        mask_w, mask_b = visible(obs, iw), visible(obs, ib)
        if obs.batch == 1:
            return self._single(obs, gw, gb, mask_w & mask_b[:, None], start)
        with single_threaded():
            return self._batch(obs, layer, gw, gb, mask_w.all(1) & mask_b, start)

    def _single(
        self, obs: Observation, gw: torch.Tensor, gb: torch.Tensor, seen: torch.Tensor, start: float
    ) -> Reconstruction:
        x, determined = single_input(gw, gb, None if obs.mask is None else seen)
        unseen = int((~determined).sum())
        info: dict = {"hidden": gw.shape[0], "rank": 1, "k": 1, "unseen_inputs": unseen}
        try:
            labels: torch.Tensor | None = recover_labels(obs)
        except AttackFailed as e:  # the input does not need the label; say why it is missing
            labels, info["labels_error"] = None, str(e)
        error = None
        if unseen:
            x = torch.where(determined, x, torch.full_like(x, 0.5 * sum(obs.bounds)))
            error = f"{unseen} input entries have no visible (∂W_ij, ∂b_i) pair; they are set to the box centre"
            x, projected = project(x, obs), True
        else:
            x, projected = project_if_exact(x, obs)
        info.update(projected=projected, seconds=time.perf_counter() - start)
        return Reconstruction(
            inputs=x.float().reshape(1, *obs.input_shape),
            labels=labels,
            iterations=1,
            loss=0.0,
            recovered=0 if unseen else 1,
            error=error,
            info=info,
        )

    def _batch(
        self, obs: Observation, layer: nn.Linear, gw: torch.Tensor, gb: torch.Tensor, full: torch.Tensor, start: float
    ) -> Reconstruction:
        rows = full.nonzero().flatten()
        if len(rows) == 0:
            raise AttackFailed(
                "no row of the first layer is fully visible (its weight row and bias entry): the batch analytic "
                "attack needs at least one; use a gradient-matching attack (dlg, ig) on the visible entries"
            )
        g = torch.cat([gw[rows], gb[rows, None]], dim=1)
        u, s, vh = torch.linalg.svd(g, full_matrices=False)
        rank = int((s > RANK_TOL * s[0]).sum()) if float(s[0]) > 0 else 0
        if rank == 0:
            raise AttackFailed("the visible first-layer gradient is zero: nothing to reconstruct from")
        k = min(rank, obs.batch)
        info: dict = {"hidden": gw.shape[0], "visible_rows": len(rows), "rank": rank, "k": k,
                      "singular_values": (s[: obs.batch + 1] / s[0]).tolist()}  # fmt: skip
        prob = BatchProblem(obs, layer, rows, vh[:k], u[:, :k] * s[:k])
        # restarts look for a claimable solution; with fewer visible rows than samples none is (the row space cannot
        # hold B generic inputs, see BatchProblem.uncertainty), so that case gets one attempt
        starts = _starts(g, prob, MAX_STARTS if len(rows) >= obs.batch else 1, self.options.seed, obs.bounds)
        relu = any(isinstance(m, nn.ReLU) for m in obs.model.modules())
        sparse = _sparse_start(prob.us, prob, self.options.seed) if relu else None
        info["sparse_start"] = sparse is not None
        if sparse is not None:
            starts.insert(1, sparse)
        found = self._search(obs, prob, starts)
        return _batch_reconstruction(obs, prob, found, rank, info, start)

    def _search(self, obs: Observation, prob: BatchProblem, starts: list[np.ndarray]) -> _Search:
        """Solve from each start until one is claimable (its predicted error is within the gradient's precision),
        the mismatch reaches the noise floor, or the restarts plateau."""
        b, labels = obs.batch, recover_labels(obs)
        mixed = int((label_counts(obs) > 0).sum()) > 1
        rng = np.random.default_rng(self.options.seed)
        found = _Search(precision=_exact_rms(obs))
        noise = NOISE_EPS * torch.finfo(obs.gradients[0].dtype).eps
        for n, t0 in enumerate(starts):
            targets = labels
            if mixed:  # rows are interchangeable: a label-to-row assignment per restart, relaxed to soft labels
                # (from one-hot: the batch's label distribution on every row gives δ ≈ 0 with two classes), then
                # rounded and re-solved with hard ones
                targets = labels[torch.from_numpy(rng.permutation(b))] if n > 0 else labels
                y0 = nn.functional.one_hot(targets, obs.classes).double()
                t_soft, _, n1 = prob.solve(np.concatenate([t0, y0.numpy().ravel()]), None, nfev=self.iterations)
                found.evaluations += n1
                s_ = torch.from_numpy(t_soft[prob.n_c :]).reshape(b, obs.classes)
                targets = (s_ + (1 - s_.sum(1, keepdim=True)) / obs.classes).argmax(1)
                t0 = t_soft[: prob.n_c]
            t, err, n2 = prob.solve(t0, targets, nfev=self.iterations)
            found.evaluations += n2
            found.history.append(err)
            found.per_start.append(found.evaluations - sum(found.per_start))
            self.report(n, err)
            if found.t is None or err < found.err:
                found.err, found.t, found.targets, found.spread = err, t, targets, math.inf
                if err < MATCH_TOL:
                    found.spread = prob.uncertainty(t, targets)
                    if found.claimable:
                        break
            if found.err <= noise or _plateaued(found.history):
                break
        return found


@dataclass
class _Search:
    """The best solve so far of the batch system, and what the search spent."""

    precision: float  # the RMS input error an exact gradient still allows
    err: float = math.inf
    t: np.ndarray | None = None
    targets: torch.Tensor | None = None
    spread: float = math.inf  # the predicted RMS error of the inputs at `t`
    evaluations: int = 0
    history: list[float] = field(default_factory=list)
    per_start: list[int] = field(default_factory=list)

    @property
    def claimable(self) -> bool:
        return self.err < MATCH_TOL and CLAIM_SIGMAS * self.spread <= self.precision


def _batch_reconstruction(obs: Observation, prob: BatchProblem, found: _Search, rank: int, info: dict,
                          start: float) -> Reconstruction:  # fmt: skip
    """The best solution's inputs, claimed only when it reproduces the gradient and determines the inputs."""
    b, err, spread, precision = obs.batch, found.err, found.spread, found.precision
    x = prob.inputs(torch.from_numpy(found.t)).detach()
    exact = found.claimable
    x, projected = project_if_exact(x, obs) if exact else (project(x, obs), True)
    info.update(
        restarts=len(found.history), mismatch=err, mismatches=found.history, evaluations=found.per_start,
        uncertainty=spread, projected=projected, seconds=time.perf_counter() - start,
    )  # fmt: skip
    if exact:
        error = None
    elif err < MATCH_TOL:
        error = (
            f"the batch solve reproduces the gradient (mismatch {err:.2e}) but does not determine the inputs "
            f"(predicted RMS error {spread:.1e}, ×{CLAIM_SIGMAS:g} > {precision:.1e})"
        )
    else:
        error = f"the batch solve did not reproduce the gradient (mismatch {err:.2e} ≥ {MATCH_TOL:.0e})"
    if rank < b:
        error = f"rank {rank} < batch {b}: {error}"
    return Reconstruction(inputs=x.float().reshape(b, *obs.input_shape), labels=found.targets.long(),
                          iterations=found.evaluations, loss=err, recovered=b if exact else 0, error=error,
                          info=info)  # fmt: skip
