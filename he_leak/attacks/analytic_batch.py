"""The batch system of the analytic attack (see he_leak.attacks.analytic): unknown coefficients C (B×k) of the
inputs in the top-k row space V of the first layer's visible gradient, ``X̃ = C V`` with ``(C V)[:, -1] = 1``, solved
by Levenberg–Marquardt so that the model's gradient at those inputs reproduces the observed one.

Speed, against the previous implementation (scipy MINPACK, a generic autograd Jacobian through x, torch's threads;
faces #0, tanh, the shared 2-core machine, so noisy): B = 8, h = 32: 4.5 s → 0.2 s; B = 16, h = 20: its 60 s
wall-clock budget ran out after 179 evaluations (16 dB) → 288 evaluations in 2.0 s (79 dB).  From:

* the first layer collapses to ``z = C (V_x Wᵀ) + b`` (k×h), so nothing costs O(d) per evaluation (3× alone);
* every sample's share of the mean gradient depends on its own row c_n only, so the Jacobian takes h_vis + m_o
  batched reverse passes instead of m = h_vis·k + m_o (see jacobian);
* the damped normal equations are solved with LAPACK on JᵀJ (n×n) rather than MINPACK's unblocked QR of J (m×n);
* one thread (see single_threaded).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from he_leak.errors import AttackFailed
from he_leak.models.losses import LOSSES, Loss
from he_leak.records import Observation

LM_FTOL = 1e-10  # a restart ends when an accepted step reduces the squared residual by less than this fraction
LM_XTOL = 1e-15  # … or moves the coefficients by less than this fraction of their norm
LM_DAMPING = 1e-3  # initial Marquardt damping, relative to the largest diagonal entry of JᵀJ
LM_MAX_DAMPING = 1e16  # damping (relative) at which no step reduces the residual any more: stop


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """One torch thread and one BLAS thread for the batch solve, restored afterwards.  Its tensors are tiny, so
    threads only contend: faces B = 4, h = 8, 50 evaluations × 8 restarts took 33.7 s with torch's 2 threads on the
    shared 2-core machine and 3.7 s with one.  It also makes the float results independent of the caller's threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(threads)


def visible(obs: Observation, index: int) -> torch.Tensor:
    """The visibility mask of gradient tensor `index` (all True without a mask)."""
    if obs.mask is None:
        return torch.ones_like(obs.gradients[index], dtype=torch.bool)
    return obs.mask[index].to(torch.bool)


class BatchProblem:
    """Residual = scaled gradient mismatch: the first layer's visible rows projected on the row space (h_vis × k,
    relative to ‖U S‖), every other gradient tensor on its visible entries (relative to its norm)."""

    def __init__(self, obs: Observation, layer: nn.Linear, rows: torch.Tensor, v: torch.Tensor, us: torch.Tensor):
        self.obs, self.b, self.k, self.classes = obs, obs.batch, v.shape[0], obs.classes
        self.loss: Loss = LOSSES[obs.loss]
        self.model = copy.deepcopy(obs.model).double().eval()
        name = next(n for n, m in obs.model.named_modules() if m is layer)
        self.layer64 = dict(self.model.named_modules())[name]
        first = {f"{name}.weight", f"{name}.bias"}
        index = {n: i for i, (n, _) in enumerate(obs.model.named_parameters())}
        self.others: dict[str, torch.Tensor] = {}
        self.masks: dict[str, torch.Tensor] = {}
        self.us_scale = 1.0 / max(float(us.norm()), 1e-30)
        target, self.scales = [us.flatten() * self.us_scale], {}
        for n, p in self.model.named_parameters():
            m = visible(obs, index[n])
            if n in first or not bool(m.any()):
                continue
            seen = obs.gradients[index[n]].double()[m]
            self.others[n], self.masks[n] = p, m
            self.scales[n] = 1.0 / max(float(seen.norm()), 1e-30)
            target.append(seen * self.scales[n])
        self.target = torch.cat(target)
        self.rows, self.v, self.us = rows, v, us
        last = v[:, -1]
        if float(last @ last) < 1e-24:
            raise AttackFailed("the bias column of the first layer's gradient lies outside its row space")
        self.c0 = last / float(last @ last)
        q, _ = torch.linalg.qr(torch.cat([last[:, None], torch.eye(self.k, dtype=v.dtype)], dim=1))
        self.null = q[:, 1 : self.k]  # k × (k-1), orthogonal to v_last
        self.n_c = self.b * (self.k - 1)
        self.n_residuals = self.target.numel()
        # z = W x + b = c (V_x Wᵀ) + b: with the first layer's output replaced by this, the input is a dummy
        self.z_map = v[:, :-1] @ self.layer64.weight.detach().T
        self.collapsed = self._input_only_feeds_first_layer()

    def _input_only_feeds_first_layer(self) -> bool:
        """Does the model see its input only through the first linear layer? (With that layer's output fixed, the
        logits must not change with the input.)"""
        z = torch.randn(2, self.z_map.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        x = torch.zeros((2, *self.obs.input_shape), dtype=torch.float64)
        handle = self.layer64.register_forward_hook(lambda mod, inp, out: z)
        try:
            with torch.no_grad():
                same = torch.equal(self.model(x), self.model(x + 1.0))
        finally:
            handle.remove()
        return bool(same)

    # --------------------------------------------------------------------------------------------- parametrisation
    def coefficients(self, t: torch.Tensor) -> torch.Tensor:
        return self.c0[None] + t[: self.n_c].reshape(self.b, self.k - 1) @ self.null.T

    def labels(self, t: torch.Tensor) -> torch.Tensor:
        """Soft labels: B×K rows summing to one from the free coordinates after the n_c coefficient ones."""
        s = t[self.n_c :].reshape(self.b, self.classes)
        return s + (1 - s.sum(1, keepdim=True)) / self.classes

    def to_free(self, c: np.ndarray) -> np.ndarray:
        """Free coordinates t of a B×k coefficient matrix (its component along c0 is dropped)."""
        return ((c - self.c0.numpy()[None]) @ self.null.numpy()).ravel()

    def inputs(self, t: torch.Tensor) -> torch.Tensor:
        return (self.coefficients(t) @ self.v)[:, :-1]

    # --------------------------------------------------------------------------------------------- residual
    def _gradients(self, c: torch.Tensor, y: torch.Tensor, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Δ = ∂L/∂z of the first layer on its visible rows (B × h_vis; row n is sample n's δ / B) and the other
        gradient tensors' visible entries, scaled (m_o), for inputs (C V)[:, :-1] and label distributions y."""
        seen: list[torch.Tensor] = []
        z = c @ self.z_map + self.layer64.bias
        if self.collapsed:
            x = torch.zeros((self.b, *self.obs.input_shape), dtype=torch.float64)
        else:
            x = (c @ self.v)[:, :-1].reshape(self.b, *self.obs.input_shape)
        hook = self.layer64.register_forward_hook(lambda mod, inp, out: seen.append(z) or z)
        try:
            logits = self.model(x)
        finally:
            hook.remove()
        loss = self.loss(logits, y)
        gz, *go = torch.autograd.grad(loss, [seen[0], *self.others.values()], create_graph=create_graph)
        parts = [g[m] * self.scales[n] for g, (n, m) in zip(go, self.masks.items(), strict=True)]
        return gz[:, self.rows], torch.cat(parts) if parts else z.new_zeros(0)

    def _split(self, t: np.ndarray, targets: torch.Tensor | None, grad: bool = False):
        u = torch.from_numpy(t).requires_grad_(grad)
        c = self.c0[None] + u[: self.n_c].reshape(self.b, self.k - 1) @ self.null.T
        if targets is None:
            return u, c, self.labels(u)
        return u, c, nn.functional.one_hot(targets.long(), self.classes).double()

    def residual(self, t: np.ndarray, targets: torch.Tensor | None) -> np.ndarray:
        """Scaled mismatch at free coordinates t; targets None: soft labels are part of t."""
        _, c, y = self._split(t, targets)
        delta, others = self._gradients(c, y, create_graph=False)
        first = (delta.T @ c).flatten() * self.us_scale
        return (torch.cat([first, others]) - self.target).detach().numpy()

    def jacobian(self, t: np.ndarray, targets: torch.Tensor | None) -> np.ndarray:
        """∂residual/∂t (m × n).  Sample n's share of the gradient depends on its own c_n only (the model treats
        samples independently), so one batched reverse pass per visible first-layer row i gives ∂Δ[n, i]/∂c_n for
        every n at once, and the first block (Δᵀ C) follows by the product rule: h_vis + m_o reverse passes
        instead of m = h_vis·k + m_o."""
        u, c, y = self._split(t, targets, grad=True)
        delta, others = self._gradients(c, y, create_graph=True)
        h, m_o = delta.shape[1], others.numel()
        eye = torch.eye(h, dtype=torch.float64)[:, None, :].expand(h, self.b, h)
        (p,) = torch.autograd.grad(delta, u, eye, retain_graph=m_o > 0, is_grads_batched=True)  # h × n_free
        rows = [self._first_block(p, c, delta)]
        if m_o:
            (q,) = torch.autograd.grad(others, u, torch.eye(m_o, dtype=torch.float64), is_grads_batched=True)
            rows.append(q)
        return torch.cat(rows).detach().numpy()

    def _first_block(self, p: torch.Tensor, c: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Rows (i, j) of ∂(Δᵀ C)/∂t from p[i] = ∂(Σ_n Δ[n, i])/∂t: the coefficient part of t moves c_n (through
        null) and Δ[n, :]; the soft-label part moves Δ only."""
        h, b, k = delta.shape[1], self.b, self.k
        pc = p[:, : self.n_c].reshape(h, b, k - 1)  # ∂Δ[n, i]/∂t_n
        own = torch.einsum("inp,nj->ijnp", pc, c)  # Σ_n ∂Δ[n,i]/∂t_n · c[n, j]
        direct = torch.einsum("ni,jp->ijnp", delta, self.null)  # Δ[n, i] · ∂c[n, j]/∂t_n
        block = [(own + direct).reshape(h * k, self.n_c)]
        if p.shape[1] > self.n_c:  # soft labels
            ps = p[:, self.n_c :].reshape(h, b, self.classes)
            block.append(torch.einsum("inq,nj->ijnq", ps, c).reshape(h * k, -1))
        return torch.cat(block, dim=1) * self.us_scale

    def mismatch(self, r: np.ndarray) -> float:
        """The relative gradient mismatch of a residual vector (root mean square over the gradient tensors)."""
        return float(np.linalg.norm(r)) / math.sqrt(1 + len(self.others))

    # --------------------------------------------------------------------------------------------- solve
    def uncertainty(self, t: np.ndarray, targets: torch.Tensor) -> float:
        """Predicted RMS error of the worst sample's input at a hard-label solution t: the residual left there, read
        as noise (σ² = ‖r‖² / (m − n)), propagated through the local Gauss–Newton covariance σ² (JᵀJ)⁻¹ to
        x_n = (C V)[n, :-1].  A small mismatch in a flat valley of the residual (an ill-conditioned batch) has a large
        uncertainty: the gradient does not pin the inputs down.  Infinite when the visible rows are fewer than the
        batch: the row space then need not hold the inputs, so the parametrisation itself is unproven."""
        m, n = self.n_residuals, self.n_c
        if len(self.rows) < self.b or m <= n:
            return math.inf
        if n == 0:
            return 0.0
        r = torch.from_numpy(self.residual(t, targets))
        _, sv, vh = torch.linalg.svd(torch.from_numpy(self.jacobian(t, targets)), full_matrices=False)
        if float(sv[-1]) <= float(sv[0]) * torch.finfo(torch.float64).eps * n:
            return math.inf
        cov = (vh.T / sv**2) @ vh * (float(r @ r) / (m - n))  # n × n, per-sample blocks of (k-1)
        vx = self.v[:, :-1]
        metric = self.null.T @ vx @ vx.T @ self.null  # (k-1) × (k-1): t-space → input-space squared norm
        blocks = cov.reshape(self.b, self.k - 1, self.b, self.k - 1).diagonal(dim1=0, dim2=2)  # (k-1, k-1, B)
        per_sample = torch.einsum("ijb,ji->b", blocks, metric).clamp(min=0) / vx.shape[1]
        return math.sqrt(float(per_sample.max()))

    def solve(self, t0: np.ndarray, targets: torch.Tensor | None, *, nfev: int) -> tuple[np.ndarray, float, int]:
        """Levenberg–Marquardt from t0 with at most `nfev` residual evaluations, to convergence (LM_FTOL / LM_XTOL):
        the uncertainty estimate holds at a minimum, not on the way there (stopping at MATCH_TOL/10 left faces B = 8
        solutions at 45–48 dB that converge to 75–82 dB).  Returns the best t, its mismatch and the evaluations."""
        with single_threaded():
            return self._lm(np.asarray(t0, dtype=np.float64).copy(), targets, nfev)

    def _lm(self, t: np.ndarray, targets: torch.Tensor | None, nfev: int) -> tuple[np.ndarray, float, int]:
        """The Levenberg–Marquardt loop (Marquardt's diagonal scaling; damping ÷3 on success, ×4 on failure).
        Hand-written because scipy's MINPACK lmder factorises J (m×n) with an unblocked QR every iteration: 38 ms at
        n = 240 against ~2 ms for LAPACK on the n×n normal equations, single-threaded (threaded OpenBLAS on the
        shared 2-core machine measured 0.27 s per 240×240 solve, see single_threaded)."""
        r = self.residual(t, targets)
        cost, evals, damping = float(r @ r), 1, None
        while evals < nfev and t.size and cost > 0:
            j = self.jacobian(t, targets)
            a, g = j.T @ j, j.T @ r
            diag = np.maximum(np.diag(a), 1e-30 * max(float(np.diag(a).max()), 1e-300))
            damping = LM_DAMPING * float(diag.max()) if damping is None else damping
            accepted = False
            while evals < nfev and damping <= LM_MAX_DAMPING * float(diag.max()):
                try:
                    step = -np.linalg.solve(a + damping * np.diag(diag), g)
                except np.linalg.LinAlgError:
                    damping *= 4
                    continue
                r_new = self.residual(t + step, targets)
                evals += 1
                cost_new = float(r_new @ r_new)
                if cost_new < cost:
                    accepted, reduction = True, (cost - cost_new) / cost
                    t, r, cost = t + step, r_new, cost_new
                    damping /= 3
                    break
                damping *= 4
            if not accepted or reduction < LM_FTOL or np.linalg.norm(step) <= LM_XTOL * (np.linalg.norm(t) + LM_XTOL):
                break
        return t, self.mismatch(r), evals
