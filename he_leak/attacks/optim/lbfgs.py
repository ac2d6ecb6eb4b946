"""L-BFGS whose long memory costs two passes over the stored pairs per iteration, with a strong-Wolfe search.

Why not `torch.optim.LBFGS`: it runs the two-loop recursion as ~4·m small tensor operations per iteration. DLG on
LeNet wants m = 300 pairs (fewer evaluations to 40 dB than m = 100), and there that Python-level bookkeeping cost
~5 ms an iteration against ~2–3 ms for the objective itself (one CPU thread). Here the recursion is the same algebra
written as two triangular solves on the m×m inner products sᵢᵀyⱼ and yᵢᵀyⱼ, kept up to date with one pass over the
pairs per iteration; the direction is the second pass. Nocedal & Wright, Numerical Optimization, §7.2 (two-loop
recursion) and §3.5 (line search); the step length comes from `he_leak.attacks.optim.wolfe` (trials evaluated where x
lives: no n-vector goes to the host per trial, only φ and φ').

With pairs (sᵢ, yᵢ), i oldest to newest, A = [sᵢᵀyⱼ] and the two loops' coefficients α and δ = α − β:
    triu(A)·α = S·g                                       (first loop, newest to oldest)
    δᵀ·triu(A) = (diag(A)·α − γ·(Y·g − YYᵀ·α))ᵀ           (second loop, oldest to newest)
    H·g = γ·(g − Yᵀα) + Sᵀδ,  γ = sᵀy / yᵀy of the newest pair.
`tests/test_lbfgs.py` checks this against the textbook loop."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

import torch

from he_leak.attacks.optim.wolfe import strong_wolfe

Evaluation = tuple[float, torch.Tensor]  # f(x), ∇f(x) on x's device and in its dtype
Objective = Callable[[torch.Tensor], Evaluation]  # flat x -> its Evaluation
T = TypeVar("T")
# A computation that needs evaluations: it yields what it wants evaluated, is sent the Evaluation, returns a T. Written
# this way, one run drives it with its own objective (`drive`) and `he_leak.attacks.optim.lockstep` drives many of them
# with one batched objective, in one thread.
Asking = Generator[Any, Evaluation, T]


def drive(co: Asking[T], evaluate: Callable[[Any], Evaluation]) -> T:
    """Run `co` to its end, answering each request with `evaluate(request)`; its return value."""
    try:
        request = next(co)
        while True:
            request = co.send(evaluate(request))
    except StopIteration as stop:
        return stop.value

CURVATURE_EPS = 1e-10  # a pair is kept only when sᵀy > CURVATURE_EPS · yᵀy (as torch.optim.LBFGS)
# The stored pairs only shape the search direction (the line search runs on the true objective), so they are kept
# in float32 even when the objective is float64: half the memory traffic of the two passes per iteration.
MEMORY_DTYPE = torch.float32


class Memory:
    """The last `history` (s, y) pairs: vectors in the slots of one (2·history)×n tensor (a ring, never shifted),
    their inner products sᵢᵀyⱼ and yᵢᵀyⱼ oldest first in a window that slides along a (2·history)² buffer.

    One pass over the pairs per iteration gives S·g and Y·g for the new gradient; the new pair's products with the
    stored ones follow from those and from the last direction's coefficients (y = g_new − g, s = t·d), so they cost
    O(m²) instead of two more passes.
    """

    def __init__(self, n: int, history: int, *, device: torch.device, dtype: torch.dtype = MEMORY_DTYPE) -> None:
        self.m = history
        self.W = torch.zeros(2 * history, n, device=device, dtype=dtype)  # rows: s in [:m], y in [m:]
        self._sy = torch.zeros(2 * history, 2 * history, device=device, dtype=torch.float64)
        self._yy = torch.zeros_like(self._sy)
        self.start = 0  # the window's offset in _sy/_yy
        self.order: list[int] = []  # slots of W, oldest first
        self.idx = torch.zeros(0, dtype=torch.long, device=device)
        self._at: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (g, S·g, Y·g), oldest first
        self._last: tuple | None = None  # the last direction: (g, d, S·g, Y·g, α, δ, γ)

    def __len__(self) -> int:
        return len(self.order)

    def _window(self, extra: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """sᵢᵀyⱼ and yᵢᵀyⱼ of the stored pairs (plus `extra` rows/columns beyond them)."""
        w = slice(self.start, self.start + len(self.order) + extra)
        return self._sy[w, w], self._yy[w, w]

    def _products(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """S·g and Y·g in float64, oldest first (the one pass over the stored pairs)."""
        if self._at is not None and self._at[0] is g:
            return self._at[1], self._at[2]
        wg = (self.W @ g.to(self.W.dtype)).double()
        return wg[: self.m][self.idx], wg[self.m :][self.idx]

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        """d = −H·g for the L-BFGS inverse-Hessian estimate H (the two-loop recursion as two triangular solves)."""
        if not self.order:  # no curvature yet: a short steepest-descent step, as torch.optim.LBFGS takes
            d = -g * min(1.0, 1.0 / float(g.abs().sum()))
            self._last = (g, d, None, None, None, None, None)
            return d
        sg, yg = self._products(g)
        A, YY = self._window()  # solve_triangular reads only the triangle it is told to
        gamma = float(A[-1, -1] / YY[-1, -1])
        alpha = torch.linalg.solve_triangular(A, sg[:, None], upper=True)[:, 0]
        rhs = torch.diagonal(A) * alpha - gamma * (yg - YY @ alpha)
        delta = torch.linalg.solve_triangular(A, rhs[None, :], upper=True, left=False)[0]  # δᵀ·triu(A) = rhsᵀ
        coef = torch.zeros(2 * self.m, device=g.device, dtype=torch.float64)
        coef[self.idx], coef[self.m + self.idx] = delta, -gamma * alpha
        d = -(gamma * g + (coef.to(self.W.dtype) @ self.W).to(g.dtype))
        self._last = (g, d, sg, yg, alpha, delta, gamma)
        return d

    def update(self, step: float, g_new: torch.Tensor) -> None:
        """Record the pair of the step just taken, x_new = x + step·d (d and g from the last `direction`)."""
        g, d, sg, yg, alpha, delta, gamma = self._last
        s, y = step * d, g_new - g
        sy, yy = float(s.double() @ y.double()), float(y.double() @ y.double())
        sgn, ygn = self._products(g_new)
        self._at = (g_new, sgn, ygn)
        if not sy > CURVATURE_EPS * yy:  # keep the memory; S·g_new, Y·g_new stay valid
            return
        k = len(self.order)
        if k:  # sᵢᵀy, yᵢᵀy, and sᵀyⱼ = step·dᵀyⱼ with d = −(γg + Sᵀδ − γYᵀα)
            A, YY = self._window()
            col_sy, col_yy = sgn - sg, ygn - yg
            row_sy = -step * (gamma * yg + A.T @ delta - gamma * (YY @ alpha))
        else:
            col_sy = col_yy = row_sy = sgn
        if k == self.m:  # drop the oldest pair
            slot = self.order.pop(0)
            col_sy, col_yy, row_sy, sgn, ygn = col_sy[1:], col_yy[1:], row_sy[1:], sgn[1:], ygn[1:]
            k -= 1
            self.start += 1
            if self.start > self.m:  # no room left to append: move the window back to the buffer's start
                w = slice(self.start, self.start + k)  # (starts past k: no overlap)
                self._sy[:k, :k], self._yy[:k, :k] = self._sy[w, w], self._yy[w, w]
                self.start = 0
        else:
            slot = k
        self.order.append(slot)
        self.idx = torch.tensor(self.order, device=self.W.device)
        A, YY = self._window()
        A[:k, k], A[k, :k], YY[:k, k], YY[k, :k] = col_sy, row_sy, col_yy, col_yy
        A[k, k], YY[k, k] = sy, yy
        self.W[slot], self.W[self.m + slot] = s, y
        new = torch.stack([s.double() @ g_new.double(), y.double() @ g_new.double()])
        self._at = (g_new, torch.cat([sgn, new[:1]]), torch.cat([ygn, new[1:]]))


class Minimizer:
    """L-BFGS from x0 on `fun`; `iterate(k)` runs up to k iterations and says whether it can go on.

    The iterate is kept in float64 (so a step s = t·d is exact) while `fun`, its gradient and the memory work in
    `dtype` (float32 where that is precise enough: half the memory traffic). `steps(k)` is `iterate(k)` as an
    `Asking` computation (it yields points in `dtype`); then `fun` may be None and `first` is the evaluation at x0.
    """

    def __init__(  # fmt: skip
        self, fun: Objective | None, x0: torch.Tensor, *, history: int, dtype: torch.dtype | None = None,
        first: Evaluation | None = None,
    ) -> None:
        self.fun, self.dtype = fun, dtype or x0.dtype
        self.x = x0.detach().reshape(-1).to(torch.float64).clone()
        self.f, self.g = first if first is not None else fun(self.x.to(self.dtype))
        self.evaluations = 1
        self.memory = Memory(self.x.numel(), history, device=self.x.device)

    def _search(self, d: torch.Tensor) -> Asking[bool]:
        """Strong-Wolfe step along d (`he_leak.attacks.optim.wolfe`); on success move there and update the memory.

        Trials are evaluated where x lives; the search itself sees two floats per trial (φ and φ'). When it ends
        without a Wolfe point but one of its trials did decrease f, that trial is taken, as torch.optim.LBFGS takes
        whatever its search returns: giving up there stalled DLG on about 1 in 12 CKKS key draws at ~13% of the
        ciphertext bytes (measured with scipy's search, which gave up the same way).
        """
        d64 = d.double()
        search = strong_wolfe(self.f, float(self.g.double() @ d64))
        best = last = None  # (f, t, x, g): the lowest f below self.f seen on this line; the last trial
        try:
            t = next(search)
            while True:
                x = self.x + t * d64
                f, g = yield x.to(self.dtype)
                self.evaluations += 1
                last = (f, t, x, g)
                if f < (best[0] if best is not None else self.f):
                    best = last
                t = search.send((f, float(g.double() @ d64)))
        except StopIteration as stop:
            found = stop.value
        chosen = last if found is not None else best
        if chosen is None or not chosen[0] < self.f:
            return False
        f, t, x, g = chosen
        self.memory.update(t, g)
        self.x, self.f, self.g = x, f, g
        return True

    def iterate(self, iterations: int, *, stop_below: float = 0.0) -> bool:
        """Up to `iterations` L-BFGS iterations; False once no step decreases f (or f ≤ stop_below, or ∇f = 0)."""
        return drive(self.steps(iterations, stop_below=stop_below), self.fun)

    def steps(self, iterations: int, *, stop_below: float = 0.0) -> Asking[bool]:
        """`iterate`, asking for its evaluations."""
        for _ in range(iterations):
            if self.f <= stop_below or not bool(self.g.any()):
                return False
            if (yield from self._search(self.memory.direction(self.g))):
                continue
            if not len(self.memory):  # steepest descent failed too
                return False
            self.memory = Memory(self.x.numel(), self.memory.m, device=self.x.device)
        return True
