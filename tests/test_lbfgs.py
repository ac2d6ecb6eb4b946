"""`he_leak.attacks.optim.lbfgs`: the matrix form of the two-loop recursion against the textbook loop, and the
minimiser."""

from __future__ import annotations

import math

import pytest
import torch

from he_leak.attacks.optim.lbfgs import Memory, Minimizer

EXACT = 1e-12  # relative: float64 memory, same algebra in another order
FLOAT32 = 1e-4  # relative: float32 memory against the float64 loop


def two_loop(pairs: list[tuple[torch.Tensor, torch.Tensor]], g: torch.Tensor) -> torch.Tensor:
    """Nocedal & Wright, Algorithm 7.4, in float64: −H·g for the pairs (oldest first)."""
    q, alphas = g.double().clone(), []
    for s, y in reversed(pairs):
        a = (s @ q) / (s @ y)
        q -= a * y
        alphas.append(a)
    s, y = pairs[-1]
    r = q * (s @ y) / (y @ y)
    for (s, y), a in zip(pairs, reversed(alphas), strict=True):
        r += s * (a - (y @ r) / (s @ y))
    return -r


def stored(mem: Memory) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(mem.W[i].double(), mem.W[mem.m + i].double()) for i in mem.order]


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, EXACT), (torch.float32, FLOAT32)])
def test_direction_is_the_two_loop_recursion(dtype: torch.dtype, tol: float) -> None:
    """Through the ring's wrap-around and the window's moves (25 updates with room for 4 pairs)."""
    gen = torch.Generator().manual_seed(0)
    n, m = 40, 4
    q = torch.randn(n, n, generator=gen, dtype=torch.float64)
    hess = q @ q.T + n * torch.eye(n, dtype=torch.float64)
    mem = Memory(n, m, device=torch.device("cpu"), dtype=dtype)
    x = torch.randn(n, generator=gen, dtype=torch.float64)
    g = hess @ x
    checked = 0
    for _ in range(25):
        d = mem.direction(g)
        if len(mem):
            ref = two_loop(stored(mem), g)
            assert float((d - ref).norm() / ref.norm()) < tol
            checked += 1
        x = x + 0.3 * d
        g_new = hess @ x + 0.01 * torch.sin(x)  # not quite quadratic: the pairs differ in curvature
        mem.update(0.3, g_new)
        g = g_new
    assert checked == 24 and len(mem) == m


def test_pairs_without_positive_curvature_are_not_stored() -> None:
    mem = Memory(3, 2, device=torch.device("cpu"), dtype=torch.float64)
    g = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    d = mem.direction(g)
    mem.update(1.0, g - 2 * d)  # y = −2·d ∥ −s: sᵀy < 0
    assert len(mem) == 0
    g2 = g - 2 * d
    d2 = mem.direction(g2)
    mem.update(1.0, g2 + 2 * d2)  # y = 2·d ∥ s: stored
    assert len(mem) == 1


def _rosenbrock(x: torch.Tensor) -> tuple[float, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    f = ((1 - x[:-1]) ** 2 + 100 * (x[1:] - x[:-1] ** 2) ** 2).sum()
    return float(f.detach()), torch.autograd.grad(f, x)[0]


@pytest.mark.parametrize("history", [1, 5, 50])
def test_minimizer_solves_rosenbrock_monotonically(history: int) -> None:
    opt = Minimizer(_rosenbrock, torch.zeros(20, dtype=torch.float64), history=history)
    values = [opt.f]
    while opt.iterate(10, stop_below=1e-20):
        values.append(opt.f)
    values.append(opt.f)
    assert all(b <= a for a, b in zip(values, values[1:], strict=False))  # never accepts an increase
    assert opt.f < 1e-16 and float((opt.x - 1).abs().max()) < 1e-7


def test_minimizer_float32_objective_keeps_a_float64_iterate() -> None:
    target = torch.linspace(-1, 1, 30, dtype=torch.float64)

    def quadratic(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        assert x.dtype == torch.float32
        r = x - target.float()
        return float(r @ r), 2 * r

    opt = Minimizer(quadratic, torch.zeros(30), history=5, dtype=torch.float32)
    while opt.iterate(10, stop_below=1e-12):
        pass
    assert opt.x.dtype == torch.float64 and float((opt.x - target).abs().max()) < 1e-5


def test_minimizer_stops_when_no_step_decreases() -> None:
    """A gradient that points the wrong way: the line search fails, memory or not, and iterate says so."""

    def wrong(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        return float(x @ x), -2 * x

    opt = Minimizer(wrong, torch.ones(4, dtype=torch.float64), history=3)
    assert opt.iterate(5) is False
    assert math.isclose(opt.f, 4.0) and opt.evaluations < 60


def test_a_decrease_is_taken_when_no_wolfe_point_exists() -> None:
    """|x| from x = 1.3 along −1: the slope is ±1 everywhere, so no step meets the strong curvature condition
    (|slope| ≤ 0.9); scipy's search brackets the kink, zooms and gives up (step None). Its trials did decrease f,
    and the minimiser must take the best of them rather than stop."""

    def absolute(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        return float(x.abs().sum()), torch.sign(x)

    opt = Minimizer(absolute, torch.tensor([1.3], dtype=torch.float64), history=3)
    assert opt.iterate(1) is True
    assert opt.f < 0.3
