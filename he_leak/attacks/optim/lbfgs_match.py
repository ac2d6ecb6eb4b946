"""Gradient matching with L-BFGS, made reliable: the DLG objective (Zhu et al. 2019), fixed so it does not diverge.

Why the original loop (L-BFGS, lr=1, no line search, randn dummies, raw squared distance) fails on a share of seeds,
measured with `experiments/dlg_divergence.py`: its first unit steps, taken without a line search on a poor initial
curvature estimate, overshoot — the soft-label logits jump from ~3 to ~45 and the dummy image far outside [0, 1].
There the softmax over labels and the sigmoids saturate, the gradient wrt the label vanishes with the *wrong* class
locked in, and the run is stuck (loss rising, PSNR ~5 dB) or overflows to NaN. The fix removes that cause:

- a strong-Wolfe line search, so no step is taken without sufficient decrease (no overshoot into saturation);
- dummy inputs start inside the known box (uniform) and dummy label logits at 0;
- each layer's squared distance is weighted by (mean norm / that layer's target norm) ** LAYER_BALANCE: with the raw
  sum a wide first layer (e.g. 65536 ciphertext bytes × 32 units) swamps the bias and output layers that pin the
  back-propagated error and L-BFGS stalls (16% of ciphertext bytes exact versus 100% with the balance);
- the run stops when a step no longer decreases the objective, below a tolerance, or (the attacker-side stop,
  `x_tol`) once a step no longer changes the reconstruction materially.

Speed (`he-leak bench`): with the line search, L-BFGS needs about half the plain loop's evaluations to 40 dB, but
torch.optim.LBFGS's bookkeeping for a 300-pair memory cost more than the objective itself; `he_leak.attacks.optim.lbfgs`
does the same algebra in two passes over the memory per iteration.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from he_leak.attacks.optim.lbfgs import Asking, Evaluation, Minimizer, Objective, drive
from he_leak.attacks.optim.unroll import Simulator
from he_leak.errors import AttackFailed
from he_leak.models.losses import LOSSES

Result = tuple[torch.Tensor, torch.Tensor, int, float]  # inputs, label probabilities, steps used, normalised loss
Request = tuple[torch.Tensor, Objective]  # a point (flat, in its phase's dtype) and the objective of its run alone
Progress = Callable[[int, int, float], None]  # (step, total, loss) -> None
Monitor = Callable[[int, torch.Tensor], bool | None]  # (step, inputs) -> True to stop (bookkeeping only)

DEFAULT_TOL = 1e-12  # on the balanced objective divided by the mean layer norm
# The attacker-side stop (`x_tol`): the run ends after a step (up to MAX_ITER iterations) that moved the inputs by less
# than DEFAULT_X_TOL RMS of the box range, the label estimate unchanged — only what the attacker sees — in the last
# precision phase from its (X_TOL_SKIP + 1)-th step. Chosen from per-step traces: docs/measurements.md#dlg-stop.
DEFAULT_X_TOL = 2e-4
X_TOL_SKIP = 3
MAX_ITER = 20  # L-BFGS iterations per step (a step is what `progress` and `monitor` see; torch's LBFGS default)
HISTORY = 300  # L-BFGS memory pairs: fastest to 40 dB of 100 / 300 / 600 (docs/measurements.md#dlg-memory)
# Layer l's squared distance is weighted by (mean norm / ‖t_l‖²) ** LAYER_BALANCE: the only exponent that both
# converges fast on LeNet and recovers every CKKS view exactly (docs/measurements.md#layer-balance).
LAYER_BALANCE = 0.75


def dlg_lbfgs(model: nn.Module, target_grads: Sequence[torch.Tensor], **options: Any) -> Result:
    """One gradient-matching run with its own objective: `dlg_lbfgs_steps` (same arguments) driven to its end."""
    return drive(dlg_lbfgs_steps(model, target_grads, **options), lambda request: request[1](request[0]))


def dlg_lbfgs_steps(
    model: nn.Module, target_grads: Sequence[torch.Tensor], *, input_shape: tuple[int, ...], classes: int, steps: int,
    seed: int, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    bounds: tuple[float, float] = (0.0, 1.0), tol: float = DEFAULT_TOL, x_tol: float = DEFAULT_X_TOL,
    label: torch.Tensor | None = None, batch: int | None = None, max_iter: int = MAX_ITER, history_size: int = HISTORY,
    progress: Progress | None = None, monitor: Monitor | None = None, loss: str = "cross-entropy",
    mask: Sequence[torch.Tensor] | None = None, simulator: Simulator | None = None,
) -> Asking[Result]:  # fmt: skip
    """Recover the inputs whose gradient matches ``target_grads`` (the mean cross-entropy gradient over a batch).

    ``input_shape`` is per sample; the batch size is ``len(label)`` when a label is given, else ``batch`` (default 1).
    ``label=None`` optimises soft labels jointly (DLG); a label tensor (B integer classes) fixes them (iDLG).
    Each of ``steps`` steps is one ``LBFGS.step`` (up to ``max_iter`` iterations with a strong-Wolfe line search).
    ``monitor`` (bookkeeping, e.g. a benchmark watching the PSNR) sees the inputs after every step; True stops.
    ``x_tol`` is the attacker-side stop: a step changing the inputs by less than x_tol RMS (relative to the box
    range) with an unchanged label estimate ends the run; 0 runs on to ``tol`` or a stall.
    ``loss``: the training loss (he_leak.models.losses); ``mask`` (True = visible): the entries the attacker sees;
    ``simulator`` (he_leak.attacks.optim.unroll): match the client's simulated update instead of one gradient.

    As an `Asking` computation it yields `Request`s (the point, flat [inputs, label logits unless ``label``] in the
    phase's dtype, and the run's own objective) and is sent (balanced distance there, its gradient): `dlg_lbfgs`
    answers with that objective, `dlg_lbfgs_many` serves many runs by one batched pass.

    Returns (inputs B×input_shape in ``dtype``, label probabilities B×classes, steps used, final loss divided by the
    mean layer norm: Σ_l w_l ‖g_l − t_l‖² / mean_l ‖t_l‖²). Raises AttackFailed on a non-finite loss.
    """
    device = torch.device(device)
    params0 = [p for p in model.parameters() if p.requires_grad]
    if len(target_grads) != len(params0) or any(
        t.shape != p.shape for t, p in zip(target_grads, params0, strict=True)
    ):
        raise AttackFailed("the target gradients do not match the model's parameters (count or shapes)")
    training_loss = LOSSES[loss]
    if mask is not None:
        target_grads = [t * m for t, m in zip(target_grads, mask, strict=True)]
    weights, scale = balance(target_grads)

    if label is not None:
        label = torch.as_tensor(label, dtype=torch.long).reshape(-1).to(device)
        if batch is not None and batch != len(label):
            raise AttackFailed(f"batch {batch} but {len(label)} labels given")
        batch = len(label)
    b = batch or 1
    gen = torch.Generator().manual_seed(seed)
    lo, hi = bounds
    x = lo + (hi - lo) * torch.rand((b, *input_shape), generator=gen, dtype=torch.float64)
    y_logits = torch.zeros(b, classes, dtype=torch.float64)
    # Precision escalation: L-BFGS in `dtype` until it stalls, then (if that was float32) on in float64 from there.
    phases = [dtype] if dtype == torch.float64 else [dtype, torch.float64]
    loss, used = math.inf, 0
    for phase, dt in enumerate(phases):
        run = _Phase(model, target_grads, weights, label, classes, dt, device, training_loss, mask, simulator)
        x, y_logits, loss, used, done = yield from run.optimise(
            x, y_logits, used=used, steps=steps, stop_below=tol * scale, scale=scale, max_iter=max_iter,
            history_size=history_size, progress=progress, monitor=monitor,
            x_tol=x_tol * (hi - lo) if phase == len(phases) - 1 else 0.0,  # float32 settling is rounding: escalate
        )  # fmt: skip
        if done or used >= steps or phase == len(phases) - 1:
            break
    return x.detach(), F.softmax(y_logits.detach(), -1), used, loss / scale


def balance(target_grads: Sequence[torch.Tensor]) -> tuple[list[float], float]:
    """The per-layer weights (mean norm / layer norm) ** LAYER_BALANCE and the mean layer norm of the (visible)
    target gradient; AttackFailed when there is nothing to match."""
    norms = [float((t.double() ** 2).sum()) for t in target_grads]
    norm = sum(norms)
    if not math.isfinite(norm) or norm <= 0:
        raise AttackFailed(f"the target gradient has squared norm {norm}: nothing to match")
    scale = norm / len(norms)
    return [(scale / n) ** LAYER_BALANCE if n > 0 else 0.0 for n in norms], scale


class _Phase:
    """One precision phase of `dlg_lbfgs`: the model, targets and dummies in one dtype, optimised by L-BFGS."""

    def __init__(self, model, target_grads, weights, label, classes, dtype, device, loss, mask, simulator) -> None:
        self.net = copy.deepcopy(model).to(device=device, dtype=dtype)
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.simulator = simulator
        self.named = {n: p.detach() for n, p in self.net.named_parameters()}
        self.targets = [g.detach().to(device=device, dtype=dtype) for g in target_grads]
        self.masks = [None] * len(self.targets) if mask is None else [m.to(device=device, dtype=dtype) for m in mask]
        self.weights, self.label, self.classes, self.dtype, self.device = weights, label, classes, dtype, device
        self.loss = loss

    def distance(self, x: torch.Tensor, y_logits: torch.Tensor) -> torch.Tensor:
        """The balanced squared gradient distance over the visible entries, differentiable in x and y_logits."""
        target = F.softmax(y_logits, -1) if self.label is None else self.label
        if self.simulator is not None:
            grads = self.simulator.update(self.named, x, target)[0]
        else:
            grads = torch.autograd.grad(self.loss(self.net(x), target), self.params, create_graph=True)
        total = 0
        for g, t, w, m in zip(grads, self.targets, self.weights, self.masks, strict=True):
            diff = g - t if m is None else (g - t) * m
            total = total + w * (diff**2).sum()
        return total

    def optimise(  # fmt: skip
        self, x, y_logits, *, used, steps, stop_below, scale, max_iter, history_size, progress, monitor, x_tol,
    ) -> Asking[tuple[torch.Tensor, torch.Tensor, float, int, bool]]:
        """Run until the tolerance, the attacker-side stop, the step budget, a monitor stop (done=True) or a stall
        (done=False), asking for evaluations as `Request`s."""
        x = x.detach().to(device=self.device, dtype=self.dtype)
        y_logits = y_logits.detach().to(device=self.device, dtype=self.dtype)
        nx = x.numel()
        if self.label is not None:  # iDLG: the labels are fixed; softmax of these logits is the exact one-hot
            y_logits = F.one_hot(self.label, self.classes).to(self.dtype) * 1e4

        def objective(z: torch.Tensor) -> Evaluation:
            xz = z[:nx].reshape(x.shape).requires_grad_(True)
            if self.label is not None:
                diff = self.distance(xz, y_logits)
                return float(diff.detach()), torch.autograd.grad(diff, xz)[0].reshape(-1)
            yz = z[nx:].reshape(y_logits.shape).requires_grad_(True)
            diff = self.distance(xz, yz)
            gx, gy = torch.autograd.grad(diff, (xz, yz))
            return float(diff.detach()), torch.cat([gx.reshape(-1), gy.reshape(-1)])

        z0 = x.reshape(-1) if self.label is not None else torch.cat([x.reshape(-1), y_logits.reshape(-1)])
        z0 = z0.to(self.dtype)
        opt = Minimizer(None, z0, history=history_size, dtype=self.dtype, first=(yield z0, objective))

        def unpack() -> tuple[torch.Tensor, torch.Tensor]:
            z = opt.x.to(self.dtype)
            return z[:nx].reshape(x.shape), (y_logits if self.label is not None else z[nx:].reshape(y_logits.shape))

        stalled = 0
        prev_x, prev_label = unpack()[0].clone(), y_logits.argmax(-1)
        first = used
        while used < steps:
            before = opt.f
            going = yield from _attach(opt.steps(max_iter, stop_below=stop_below), objective)
            used += 1
            loss = opt.f
            if not math.isfinite(loss) or not bool(torch.isfinite(opt.x).all()):
                raise AttackFailed(f"gradient matching diverged at step {used}: normalised loss {loss / scale}")
            if progress is not None:
                progress(used, steps, loss / scale)
            xs, ys = unpack()
            if (monitor is not None and monitor(used, xs)) or loss < stop_below:
                return xs, ys, loss, used, True
            if x_tol > 0 and used - first > X_TOL_SKIP and settled(xs, ys, prev_x, prev_label, x_tol):
                return xs, ys, loss, used, True
            prev_x, prev_label = xs.clone(), ys.argmax(-1)
            stalled = stalled + 1 if loss >= before * (1 - 1e-9) else 0
            if not going or stalled >= 3:  # no step decreases the objective: this precision is exhausted
                break
        xs, ys = unpack()
        return xs, ys, opt.f, used, False


def _attach(co: Asking[Any], objective: Objective) -> Asking[Any]:
    """Forward the points `co` asks for as `Request`s carrying `objective`; its return value."""
    try:
        z = next(co)
        while True:
            z = co.send((yield z, objective))
    except StopIteration as stop:
        return stop.value


def settled(
    x: torch.Tensor, y_logits: torch.Tensor, prev_x: torch.Tensor, prev_label: torch.Tensor, tol: float
) -> bool:
    """The attacker-side stop: the step moved the inputs by less than `tol` RMS and left the label estimate alone
    (one host sync per step, not per evaluation)."""
    change = (x.double() - prev_x.double()).pow(2).mean().sqrt()
    return bool((change < tol) & (y_logits.argmax(-1) == prev_label).all())
