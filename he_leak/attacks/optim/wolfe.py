"""A strong-Wolfe line search written as a generator: it asks for trial steps and is told φ(t) and φ'(t).

Why hand-written: `scipy.optimize.line_search` (and torch.optim.LBFGS's private `_strong_wolfe`) call f and ∇f
themselves — scipy on numpy vectors, so every trial sent the n-vector to the host and back, and a caller could serve
many searches with one batched evaluation only with a thread per search. Measured with `he-leak bench --batched 16`
(16 LeNet dlg runs, 2-core CPU): threads around scipy's search 0.97× one by one; one thread driving these generators
1.84×. Here the search sees two floats per trial and nothing else: the caller keeps x, d and ∇f where they live (the
CUDA device) and computes φ(t) = f(x + t·d) and φ'(t) = ∇f(x + t·d)·d there.

The algorithm is Nocedal & Wright, Numerical Optimization (2nd ed.), Algorithm 3.5 (bracketing, doubling the step)
and Algorithm 3.6 (zoom), with the trial inside a bracket placed at the minimiser of the cubic through both ends'
values and slopes (their eq. 3.59); bisection instead when that minimiser is not in the bracket's inner 80% or the
cubic has none. The bracketing phase doubles the step up to MAX_STEP = 50 (scipy's call had no cap; DLG's L-BFGS
steps are ~1, so the cap only bounds a runaway line). Zoom has no bracket-width stop: a float32 search that cannot
resolve a Wolfe point spends its MAX_TRIALS and the caller falls back to its best trial. `tests/test_wolfe.py` checks
the returned steps against the strong-Wolfe conditions computed in float64, on lines where scipy's search finds one.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass

C1 = 1e-4  # sufficient decrease (Armijo): φ(t) ≤ φ(0) + C1·t·φ'(0)
C2 = 0.9  # curvature: |φ'(t)| ≤ C2·|φ'(0)|; 0.9 is the usual choice for quasi-Newton directions
MAX_TRIALS = 25  # evaluations per search, bracketing and zoom together
MAX_STEP = 50.0  # the bracketing phase doubles the step up to here
SAFEGUARD = 0.1  # a cubic trial must lie at least this share of the bracket away from either end

Search = Generator[float, tuple[float, float], "Found | None"]


@dataclass(frozen=True)
class Found:
    """A step satisfying the strong-Wolfe conditions, with φ and φ' there (the caller's last trial)."""

    step: float
    value: float
    slope: float


@dataclass(frozen=True)
class _Point:
    t: float
    f: float
    d: float  # φ'(t)


def strong_wolfe(
    f0: float, slope0: float, *, step: float = 1.0, c1: float = C1, c2: float = C2, max_trials: int = MAX_TRIALS,
    max_step: float = MAX_STEP,
) -> Search:  # fmt: skip
    """Yield trial steps t > 0; be sent (φ(t), φ'(t)) for each; return a `Found` at the last trial when it satisfies
    the strong-Wolfe conditions, or None after `max_trials` trials (or at once when slope0 ≥ 0: not a descent
    direction). A non-finite φ(t) is treated as too large a step."""
    if not slope0 < 0 or not math.isfinite(f0):
        return None
    prev = _Point(0.0, f0, slope0)
    t = min(step, max_step)
    for trial in range(max_trials):
        f, d = yield t
        cur = _Point(t, f, d)
        if not math.isfinite(f) or f > f0 + c1 * t * slope0 or (trial > 0 and f >= prev.f):
            return (yield from _zoom(prev, cur, f0, slope0, c1, c2, max_trials - trial - 1))
        if abs(d) <= -c2 * slope0:
            return Found(t, f, d)
        if d >= 0:
            return (yield from _zoom(cur, prev, f0, slope0, c1, c2, max_trials - trial - 1))
        if t >= max_step:
            return None
        prev, t = cur, min(2 * t, max_step)
    return None


def _zoom(lo: _Point, hi: _Point, f0: float, slope0: float, c1: float, c2: float, trials: int) -> Search:
    """Algorithm 3.6: `lo` satisfies sufficient decrease with the lowest φ so far, and the bracket [lo, hi] (either
    order) holds a strong-Wolfe step."""
    for _ in range(trials):
        t = _cubic_step(lo, hi)
        f, d = yield t
        if not math.isfinite(f) or f > f0 + c1 * t * slope0 or f >= lo.f:
            hi = _Point(t, f, d)
            continue
        if abs(d) <= -c2 * slope0:
            return Found(t, f, d)
        if d * (hi.t - lo.t) >= 0:
            hi = lo
        lo = _Point(t, f, d)
    return None


def _cubic_step(a: _Point, b: _Point) -> float:
    """The minimiser of the cubic interpolating φ and φ' at a and b, kept SAFEGUARD inside the bracket; the midpoint
    when that cubic has no usable minimiser (or b's values are not finite)."""
    left, right = min(a.t, b.t), max(a.t, b.t)
    width = right - left
    mid = left + width / 2
    if not (math.isfinite(b.f) and math.isfinite(b.d)) or width <= 0:
        return mid
    d1 = a.d + b.d - 3 * (a.f - b.f) / (a.t - b.t)
    disc = d1 * d1 - a.d * b.d
    if disc < 0:
        return mid
    d2 = math.copysign(math.sqrt(disc), b.t - a.t)
    denom = b.d - a.d + 2 * d2
    if denom == 0:
        return mid
    t = b.t - (b.t - a.t) * (b.d + d2 - d1) / denom
    if not math.isfinite(t) or not left + SAFEGUARD * width <= t <= right - SAFEGUARD * width:
        return mid
    return t
