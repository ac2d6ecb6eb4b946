"""`he_leak.attacks.optim.wolfe`: every step it returns satisfies the strong-Wolfe conditions (checked in float64), on
lines where scipy's search finds one too; it lands on a quadratic's minimiser; it gives up cleanly where there is
nothing to find."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy.optimize import line_search

from he_leak.attacks.optim.wolfe import C1, C2, MAX_TRIALS, Found, strong_wolfe

EXACT = 1e-12  # a cubic through a quadratic's two points and slopes lands on its minimiser up to rounding

Line = Callable[[float], tuple[float, float]]  # t -> (φ(t), φ'(t))


def drive(phi: Line, **kw) -> tuple[Found | None, int]:
    """Run the search on φ; the result and the number of trials it asked for."""
    f0, d0 = phi(0.0)
    search = strong_wolfe(f0, d0, **kw)
    trials = 0
    try:
        t = next(search)
        while True:
            trials += 1
            t = search.send(phi(t))
    except StopIteration as stop:
        return stop.value, trials


def wolfe_holds(phi: Line, found: Found) -> bool:
    f0, d0 = phi(0.0)
    f, d = phi(found.step)
    return f <= f0 + C1 * found.step * d0 and abs(d) <= -C2 * d0 and (f, d) == (found.value, found.slope)


def rosenbrock_line(x: np.ndarray, p: np.ndarray) -> Line:
    def f(z: np.ndarray) -> float:
        return float(((1 - z[:-1]) ** 2 + 100 * (z[1:] - z[:-1] ** 2) ** 2).sum())

    def g(z: np.ndarray) -> np.ndarray:
        out = np.zeros_like(z)
        out[:-1] = -2 * (1 - z[:-1]) - 400 * z[:-1] * (z[1:] - z[:-1] ** 2)
        out[1:] += 200 * (z[1:] - z[:-1] ** 2)
        return out

    return lambda t: (f(x + t * p), float(g(x + t * p) @ p))


@pytest.mark.parametrize(("minimum", "expected_trials"), [(0.3, 2), (1.0, 1), (7.0, 1), (40.0, 3)])
def test_a_quadratic_is_solved(minimum: float, expected_trials: int) -> None:
    """φ(t) = (t − m)²: overshooting (m < 1) zooms back onto m by the cubic; at m = 7 the first step already meets the
    curvature condition (|φ'(1)| = 12 ≤ 0.9·14); at m = 40 the step doubles to 4, where |φ'(4)| = 72 ≤ 0.9·80."""

    def phi(t: float) -> tuple[float, float]:
        return (t - minimum) ** 2, 2 * (t - minimum)

    found, trials = drive(phi)
    assert found is not None and wolfe_holds(phi, found) and trials == expected_trials
    if minimum < 1:
        assert abs(found.step - minimum) < EXACT


@pytest.mark.parametrize("seed", range(12))
def test_rosenbrock_lines_meet_the_strong_wolfe_conditions_like_scipy(seed: int) -> None:
    """Random points of the 10-D Rosenbrock function along −∇f (descent) and along scaled random descent directions:
    ours and scipy's search both return a strong-Wolfe step (not necessarily the same one: either is correct)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, 10)
    grad = np.array([rosenbrock_line(x, e)(0.0)[1] for e in np.eye(10)])
    p = -grad * 10.0 ** rng.uniform(-6, 0)
    phi = rosenbrock_line(x, p)
    found, _ = drive(phi)
    assert found is not None and wolfe_holds(phi, found)
    f = lambda z: rosenbrock_line(z, np.zeros(10))(0.0)[0]  # noqa: E731
    g = lambda z: np.array([rosenbrock_line(z, e)(0.0)[1] for e in np.eye(10)])  # noqa: E731
    ref = line_search(f, g, x, p, c1=C1, c2=C2)[0]
    assert ref is not None and wolfe_holds(phi, Found(ref, *phi(ref)))


def test_not_a_descent_direction_asks_for_nothing() -> None:
    assert drive(lambda t: (t, 1.0)) == (None, 0)
    assert drive(lambda t: (1.0, 0.0)) == (None, 0)


def test_a_step_into_overflow_is_shortened() -> None:
    """φ is NaN beyond t = 0.5 (an overflowed model): the search bisects back into the finite part."""

    def phi(t: float) -> tuple[float, float]:
        return (math.nan, math.nan) if t > 0.5 else ((t - 0.2) ** 2 - t**3, 2 * (t - 0.2) - 3 * t**2)

    found, _ = drive(phi)
    assert found is not None and wolfe_holds(phi, found) and found.step <= 0.5


def test_gives_up_at_the_step_cap_or_after_max_trials() -> None:
    """An unbounded line keeps decreasing with a steep slope: doubling 1, 2, …, 32, then the cap 50, then None; with
    no cap, None after MAX_TRIALS trials."""
    found, trials = drive(lambda t: (-t, -1.0))
    assert found is None and trials == 7
    found, trials = drive(lambda t: (-t, -1.0), max_step=math.inf)
    assert found is None and trials == MAX_TRIALS
