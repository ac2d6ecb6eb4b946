"""Closed-form input recovery from the first fully connected layer with a bias (Phong et al. 2017; Qian, Nassar &
Hansen, "Minimal model structure analysis for input reconstruction in federated learning", arXiv 2010.15718).

For the first linear layer ``z = W x + b`` the mean gradient over a batch is

    ∂W = (1/B) Σ_n δ_n x_nᵀ,    ∂b = (1/B) Σ_n δ_n,      δ_n = ∂ℓ_n/∂z_n,

so with ``x̃_n = [x_n; 1]`` the augmented gradient ``G = [∂W | ∂b] = (1/B) Dᵀ X̃`` has rank ≤ min(h, B).

* B = 1: every row with ∂b_i ≠ 0 is a multiple of x̃, so ``x = ∂Wᵀ ∂b / ‖∂b‖²`` (the least-squares combination of
  the row ratios ``∂W_i / ∂b_i``, which weights rows by ∂b_i² and so ignores the tiny ones).  This holds whatever
  follows the layer: one hidden unit suffices at any depth (Qian et al.).
* B > 1: when the layer has more hidden units than the batch (h > B, Qian et al.) and G has rank B, its row space is
  spanned by the B augmented inputs: ``X̃ = C V`` with ``V`` the top-B right singular vectors of G and C an unknown
  B×B matrix whose rows satisfy ``(C V)[:, -1] = 1``.  The rest of the network is known, so for a candidate C every
  δ_n is computable; C is found by a small Levenberg–Marquardt solve (B(B-1) unknowns, h·B + |other gradients|
  equations) of ``(1/B) D(C)ᵀ C = U_B S_B`` together with the other layers' gradients, with labels from
  :mod:`he_leak.attacks.labels` (and relaxed to soft labels when the batch mixes classes).  A solution is claimed
  exact only when it reproduces the whole observed gradient to float32 precision; otherwise the Reconstruction
  says why (``error``) and ``recovered`` counts only what is certain.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time

import numpy as np
import torch
from scipy.optimize import least_squares
from torch import nn

from he_leak.attacks.base import ATTACKS, Attack, project
from he_leak.attacks.labels import label_counts, recover_labels
from he_leak.errors import AttackFailed
from he_leak.records import Observation, Reconstruction

RANK_TOL = 1e-5  # singular values below this fraction of the largest count as zero (float32 gradients: ~1e-7)
MATCH_TOL = 1e-5  # relative gradient mismatch under which a batch solution is claimed exact
TINY_BIAS = 1e-12  # |∂b| below this (relative to the largest row norm) leaves no usable row
MAX_STARTS = 24  # Levenberg–Marquardt restarts for a batch
MAX_NFEV = 200  # residual evaluations per restart
TIME_BUDGET = 60.0  # seconds for all restarts of one batch
SPARSE_TRIES = 4000  # random row subsets tried when looking for sparse δ's (ReLU-like layers)


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


def single_input(gw: torch.Tensor, gb: torch.Tensor) -> torch.Tensor:
    """B=1: the least-squares x of ∂W = ∂b xᵀ, i.e. ∂Wᵀ∂b / ‖∂b‖² (row ratios weighted by ∂b_i²)."""
    norm = float(gb @ gb)
    if norm <= (TINY_BIAS * float(gw.norm())) ** 2 or norm == 0.0:
        raise AttackFailed("the first layer's bias gradient is zero: no row isolates the input")
    return gw.T @ gb / norm


def _project_if_exact(x: torch.Tensor, obs: Observation) -> tuple[torch.Tensor, bool]:
    """Box + quantum projection, applied only when it moves no value by more than a quarter step (or 1e-4)."""
    p = project(x, obs)
    step = obs.quantum / 4 if obs.quantum else 1e-4
    if float((p - x).abs().max()) <= step:
        return p, True
    return x, False


class _BatchProblem:
    """The batch system in the row space of G: unknown C (B×B) with (C V)[:, -1] = 1; residual = scaled gradient
    mismatch (first layer projected on the row space, other layers in full)."""

    def __init__(self, obs: Observation, layer: nn.Linear, iw: int, ib: int, v: torch.Tensor, us: torch.Tensor):
        self.obs, self.b = obs, obs.batch
        self.model = copy.deepcopy(obs.model).double().eval()
        name = next(n for n, m in obs.model.named_modules() if m is layer)
        self.layer64 = dict(self.model.named_modules())[name]
        params = list(self.model.parameters())
        self.others = [i for i in range(len(params)) if i not in (iw, ib)]
        self.other_params = [params[i] for i in self.others]
        self.other_obs = [obs.gradients[i].double() for i in self.others]
        self.other_scale = [1.0 / max(float(g.norm()), 1e-30) for g in self.other_obs]
        self.v, self.us = v, us
        self.us_scale = 1.0 / max(float(us.norm()), 1e-30)
        last = v[:, -1]
        self.c0 = last / float(last @ last)
        q, _ = torch.linalg.qr(torch.cat([last[:, None], torch.eye(self.b, dtype=v.dtype)], dim=1))
        self.null = q[:, 1 : self.b]  # B × (B-1), orthogonal to v_last
        self.n_c = self.b * (self.b - 1)

    def coefficients(self, t: torch.Tensor) -> torch.Tensor:
        return self.c0[None] + t[: self.n_c].reshape(self.b, self.b - 1) @ self.null.T

    def inputs(self, t: torch.Tensor) -> torch.Tensor:
        return (self.coefficients(t) @ self.v)[:, :-1]

    def residual(self, t: torch.Tensor, targets: torch.Tensor, soft: bool, create_graph: bool) -> torch.Tensor:
        c = self.coefficients(t)
        x = (c @ self.v)[:, :-1].reshape(self.b, *self.obs.input_shape)
        seen: list[torch.Tensor] = []
        handle = self.layer64.register_forward_hook(lambda mod, inp, out: seen.append(out))
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        if soft:
            k = self.obs.classes
            s = t[self.n_c :].reshape(self.b, k)
            y = s + (1 - s.sum(1, keepdim=True)) / k
            loss = -(y * torch.log_softmax(logits, 1)).sum() / self.b
        else:
            loss = nn.functional.cross_entropy(logits, targets)
        grads = torch.autograd.grad(loss, [seen[0], *self.other_params], create_graph=create_graph)
        parts = [(grads[0].T @ c - self.us).flatten() * self.us_scale]
        parts += [(g - o).flatten() * w for g, o, w in zip(grads[1:], self.other_obs, self.other_scale, strict=True)]
        return torch.cat(parts)

    def solve(
        self, t0: np.ndarray, targets: torch.Tensor, soft: bool, *, deadline: float
    ) -> tuple[np.ndarray, float, int]:
        """Levenberg–Marquardt (scipy) on the scaled residual with an autograd Jacobian; stops early once the
        mismatch is below MATCH_TOL/10 or the deadline has passed."""
        norm = math.sqrt(1 + len(self.others))
        best = [math.inf, np.asarray(t0, dtype=np.float64), 0]

        def fun(t: np.ndarray) -> np.ndarray:
            r = self.residual(torch.from_numpy(t), targets, soft, create_graph=False).detach().numpy()
            err = float(np.linalg.norm(r)) / norm
            best[2] += 1
            if err < best[0]:
                best[0], best[1] = err, t.copy()
            if err < MATCH_TOL / 10 or time.perf_counter() > deadline:
                raise _Stop
            return r

        def jac(t: np.ndarray) -> np.ndarray:
            j = torch.autograd.functional.jacobian(
                lambda u: self.residual(u, targets, soft, create_graph=True), torch.from_numpy(t), vectorize=True
            )
            return j.detach().numpy()

        with contextlib.suppress(_Stop):
            least_squares(fun, best[1], jac=jac, method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=MAX_NFEV)
        return best[1], best[0], best[2]


class _Stop(Exception):
    """Raised inside the residual to end a least-squares solve early."""


def _starts(g: torch.Tensor, v: torch.Tensor, prob: _BatchProblem, count: int, seed: int) -> list[np.ndarray]:
    """Initial C's: B rows of G divided by their bias entry (each an affine mix of the inputs), random subsets of the
    rows with the largest |∂b|, plus a little noise; mapped to the free coordinates t."""
    rng = np.random.default_rng(seed)
    gb = g[:, -1]
    order = torch.argsort(gb.abs(), descending=True)
    usable = order[gb[order].abs() > TINY_BIAS * float(g.norm())]
    ratios = g[usable] / gb[usable, None]
    coeff = ratios @ v.T  # coordinates of each ratio row in the row space
    out = []
    b = prob.b
    for k in range(count):
        pool = min(len(usable), max(b, (k // 4 + 1) * b))
        pick = rng.choice(pool, size=b, replace=pool < b)
        c = coeff[torch.as_tensor(pick)].numpy() + (0 if k == 0 else 0.05 * rng.standard_normal((b, b)))
        t = (c - prob.c0.numpy()[None]) @ prob.null.numpy()
        out.append(t.ravel())
    return out


def _sparse_start(us: torch.Tensor, prob: _BatchProblem, seed: int) -> np.ndarray | None:
    """For ReLU-like layers: δ_n vanishes on the units inactive for sample n, so the columns w_n of C⁻¹ (where
    D = B·C⁻ᵀ(U S)ᵀ) are null vectors of many rows of U S at once.  Random B-1 row subsets give candidate null
    vectors; those that zero further rows are kept, refined on their whole zero set, and B distinct ones give C."""
    b = prob.b
    a = us.numpy()
    norms = np.linalg.norm(a, axis=1)
    a = a[norms > RANK_TOL * norms.max()] / norms[norms > RANK_TOL * norms.max(), None]
    if len(a) < b:
        return None
    rng = np.random.default_rng(seed)
    subsets = np.stack([rng.choice(len(a), size=b - 1, replace=False) for _ in range(SPARSE_TRIES)])
    w = np.linalg.svd(a[subsets])[2][:, -1, :]  # tries × B null vectors
    zeros = np.abs(w @ a.T) < 1e-6
    found: list[np.ndarray] = []
    for k in np.argsort(-zeros.sum(1)):
        if zeros[k].sum() < b + 1:  # B-1 chosen rows and at least two more
            break
        vec = np.linalg.svd(a[zeros[k]])[2][-1]
        if all(abs(vec @ f) < 1 - 1e-6 for f in found):
            found.append(vec)
        if len(found) == b:
            break
    if len(found) < b:
        return None
    c = np.linalg.inv(np.stack(found, axis=1))
    c = c / (c @ prob.v[:, -1].numpy())[:, None]
    return ((c - prob.c0.numpy()[None]) @ prob.null.numpy()).ravel()


@ATTACKS.register("analytic")
class Analytic(Attack):
    """Closed-form recovery from the first fully connected layer (exact for B=1; for a batch when hidden > B)."""

    name = "analytic"
    default_iterations = MAX_NFEV

    def reconstruct(self, obs: Observation) -> Reconstruction:
        start = time.perf_counter()
        layer, iw, ib = first_linear(obs.model)
        gw, gb = obs.gradients[iw].double(), obs.gradients[ib].double()
        if gw.shape[1] != math.prod(obs.input_shape):
            raise AttackFailed(
                f"the first linear layer takes {gw.shape[1]} inputs but the input has {math.prod(obs.input_shape)}"
            )
        h, b = gw.shape[0], obs.batch
        labels = recover_labels(obs)
        if b == 1:
            x, projected = _project_if_exact(single_input(gw, gb), obs)
            return Reconstruction(
                inputs=x.float().reshape(1, *obs.input_shape),
                labels=labels,
                iterations=1,
                loss=0.0,
                recovered=1,
                info={"hidden": h, "rank": 1, "projected": projected, "seconds": time.perf_counter() - start},
            )
        g = torch.cat([gw, gb[:, None]], dim=1)
        u, s, vh = torch.linalg.svd(g, full_matrices=False)
        rank = int((s > RANK_TOL * s[0]).sum()) if float(s[0]) > 0 else 0
        info: dict = {"hidden": h, "rank": rank, "singular_values": s[: b + 1].tolist()}
        if h <= b or rank < b:
            # Not identifiable: return the B rows with the largest |∂b| (each an affine mix of the inputs).
            order = torch.argsort(gb.abs(), descending=True)[:b]
            order = order.repeat(b)[:b]  # fewer hidden units than the batch: repeat rows
            den = gb[order, None]
            guess = gw[order] / torch.where(den.abs() > 1e-30, den, torch.full_like(den, 1e-30))
            reason = f"the first layer has {h} hidden units for a batch of {b}" if h <= b else ""
            reason = reason or f"the first layer's gradient has rank {rank} < batch {b}"
            info["seconds"] = time.perf_counter() - start
            return Reconstruction(
                inputs=project(guess, obs).float().reshape(b, *obs.input_shape),
                labels=labels,
                iterations=0,
                recovered=0,
                error=f"not recoverable: {reason} (needs more hidden units than the batch, Qian et al.); "
                "each returned row mixes several inputs",
                info=info,
            )
        v, us = vh[:b], u[:, :b] * s[:b]
        prob = _BatchProblem(obs, layer, iw, ib, v, us)
        counts = label_counts(obs)
        mixed = int((counts > 0).sum()) > 1
        best: tuple[float, np.ndarray, torch.Tensor] | None = None
        evaluations = 0
        deadline = time.perf_counter() + TIME_BUDGET
        starts = _starts(g, v, prob, MAX_STARTS, self.options.seed)
        relu = any(isinstance(m, nn.ReLU) for m in obs.model.modules())
        sparse = _sparse_start(us, prob, self.options.seed) if relu else None
        info["sparse_start"] = sparse is not None
        if sparse is not None:
            starts.insert(1, sparse)
        for k, t0 in enumerate(starts):
            targets = labels
            if mixed:  # soft labels first, then round and re-solve with hard ones
                y0 = (counts.double() / b).expand(b, -1) - 1.0 / obs.classes
                y0 = y0 + 0.01 * torch.randn(b, obs.classes, generator=torch.Generator().manual_seed(k), dtype=y0.dtype)
                t_soft, _, n1 = prob.solve(
                    np.concatenate([t0, y0.numpy().ravel()]), labels, soft=True, deadline=deadline
                )
                evaluations += n1
                s_ = torch.from_numpy(t_soft[prob.n_c :]).reshape(b, obs.classes)
                targets = (s_ + (1 - s_.sum(1, keepdim=True)) / obs.classes).argmax(1)
                t0 = t_soft[: prob.n_c]
            t, err, n = prob.solve(t0, targets, soft=False, deadline=deadline)
            evaluations += n
            self.report(k, err)
            if best is None or err < best[0]:
                best = (err, t, targets)
            if err < MATCH_TOL or time.perf_counter() > deadline:
                break
        assert best is not None
        err, t, targets = best
        x = prob.inputs(torch.from_numpy(t)).detach()
        exact = err < MATCH_TOL
        x, projected = _project_if_exact(x, obs) if exact else (project(x, obs), True)
        info.update(
            {"restarts": k + 1, "mismatch": err, "projected": projected, "seconds": time.perf_counter() - start}
        )
        return Reconstruction(
            inputs=x.float().reshape(b, *obs.input_shape),
            labels=targets.long(),
            iterations=evaluations,
            loss=err,
            recovered=b if exact else 0,
            error=None if exact else f"the batch solve did not reproduce the gradient (relative mismatch {err:.2e})",
            info=info,
        )
