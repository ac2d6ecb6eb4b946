"""Gradient matching with L-BFGS, made reliable: the DLG objective (Zhu et al. 2019), fixed so it does not diverge.

Why the original loop (L-BFGS, lr=1, no line search, randn dummies, raw squared distance) fails on a share of seeds,
measured with `experiments/dlg_divergence.py`: its first unit steps, taken without a line search on a poor initial
curvature estimate, overshoot — the soft-label logits jump from ~3 to ~45 and the dummy image far outside [0, 1].
There the softmax over labels and the sigmoids saturate, the gradient wrt the label vanishes with the *wrong* class
locked in, and the run is stuck (loss rising, PSNR ~5 dB) or overflows to NaN. The fix removes that cause:

- a strong-Wolfe line search, so no step is taken without sufficient decrease (no overshoot into saturation);
- dummy inputs start inside the known box (uniform) and dummy label logits at 0;
- each layer's squared distance is divided by that layer's target norm (then rescaled by the mean norm): otherwise a
  wide first layer (e.g. 65536 ciphertext bytes × 32 units) swamps the bias and output layers that pin the
  back-propagated error, and L-BFGS stalls (16% of ciphertext bytes exact versus 100% with the balance);
- the run stops when a step no longer decreases the objective, or below a tolerance.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from he_leak.errors import AttackFailed

Progress = Callable[[int, int, float], None]  # (step, total, loss) -> None
Monitor = Callable[[int, torch.Tensor], bool | None]  # (step, inputs) -> True to stop (bookkeeping only)

DEFAULT_TOL = 1e-12  # on the balanced objective divided by the mean layer norm
MAX_ITER = 20  # L-BFGS iterations per optimizer.step (torch's default)
HISTORY = 100


def label_from_bias(target_grads: Sequence[torch.Tensor], classes: int) -> torch.Tensor:
    """iDLG (Zhao et al. 2020): for one sample, the true class is the only negative entry of the last layer's bias
    gradient (softmax − one-hot), so it is the argmin. Returns a 1-element label tensor."""
    for g in reversed(target_grads):
        if g.dim() == 1 and g.numel() == classes:
            return g.detach().argmin().reshape(1).cpu()
    raise AttackFailed(f"no bias gradient of length {classes} to read the label from; pass the label explicitly")


def soft_cross_entropy(logits: torch.Tensor, label_logits: torch.Tensor) -> torch.Tensor:
    """DLG's loss: mean over the batch of Σ −softmax(label_logits)·log_softmax(logits)."""
    return torch.mean(torch.sum(-F.softmax(label_logits, -1) * F.log_softmax(logits, -1), -1))


def dlg_lbfgs(
    model: nn.Module,
    target_grads: Sequence[torch.Tensor],
    *,
    input_shape: tuple[int, ...],
    classes: int,
    steps: int,
    seed: int,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    bounds: tuple[float, float] = (0.0, 1.0),
    tol: float = DEFAULT_TOL,
    label: torch.Tensor | None = None,
    batch: int | None = None,
    max_iter: int = MAX_ITER,
    history_size: int = HISTORY,
    progress: Progress | None = None,
    monitor: Monitor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Recover the inputs whose gradient matches ``target_grads`` (the mean cross-entropy gradient over a batch).

    ``input_shape`` is per sample; the batch size is ``len(label)`` when a label is given, else ``batch`` (default 1).
    ``label=None`` optimises soft labels jointly (DLG); a label tensor (B integer classes) fixes them (iDLG).
    Each of ``steps`` steps is one ``LBFGS.step`` (up to ``max_iter`` iterations with a strong-Wolfe line search).
    ``monitor`` (bookkeeping, e.g. a benchmark watching the PSNR) sees the inputs after every step; True stops.

    Returns (inputs B×input_shape in ``dtype``, label probabilities B×classes, steps used, final normalised loss
    Σ_l ‖g_l − t_l‖² / ‖t_l‖², the per-layer relative mismatch summed). Raises AttackFailed on a non-finite loss.
    """
    device = torch.device(device)
    net = copy.deepcopy(model).to(device=device, dtype=dtype)
    params = [p for p in net.parameters() if p.requires_grad]
    targets = [g.detach().to(device=device, dtype=dtype) for g in target_grads]
    if len(targets) != len(params) or any(t.shape != p.shape for t, p in zip(targets, params, strict=True)):
        raise AttackFailed("the target gradients do not match the model's parameters (count or shapes)")
    norms = [float((t * t).sum()) for t in targets]
    norm = sum(norms)
    if not math.isfinite(norm) or norm <= 0:
        raise AttackFailed(f"the target gradient has squared norm {norm}: nothing to match")
    scale = norm / len(norms)
    weights = [scale / n if n > 0 else 0.0 for n in norms]

    if label is not None:
        label = torch.as_tensor(label, dtype=torch.long).reshape(-1).to(device)
        if batch is not None and batch != len(label):
            raise AttackFailed(f"batch {batch} but {len(label)} labels given")
        batch = len(label)
    b = batch or 1
    gen = torch.Generator().manual_seed(seed)
    lo, hi = bounds
    x = (lo + (hi - lo) * torch.rand((b, *input_shape), generator=gen, dtype=dtype)).to(device).requires_grad_(True)
    if label is None:
        y_logits = torch.zeros(b, classes, dtype=dtype, device=device, requires_grad=True)
        variables = [x, y_logits]
    else:
        y_logits = F.one_hot(label, classes).to(dtype) * 1e4  # softmax of this is the exact one-hot
        variables = [x]

    opt = torch.optim.LBFGS(
        variables,
        lr=1,
        max_iter=max_iter,
        history_size=history_size,
        line_search_fn="strong_wolfe",
    )

    def distance(create_graph: bool) -> torch.Tensor:
        out = net(x)
        loss = soft_cross_entropy(out, y_logits) if label is None else F.cross_entropy(out, label)
        grads = torch.autograd.grad(loss, params, create_graph=create_graph)
        return sum(w * ((g - t) ** 2).sum() for g, t, w in zip(grads, targets, weights, strict=True))

    def objective() -> torch.Tensor:
        opt.zero_grad()
        diff = distance(True)
        diff.backward()
        return diff

    loss = math.inf
    used = 0
    stalled = 0
    for step in range(1, steps + 1):
        before = loss
        opt.step(objective)
        loss = float(distance(False))  # at the new point (LBFGS.step returns the loss before the step)
        used = step
        if not math.isfinite(loss) or not bool(torch.isfinite(x).all()):
            raise AttackFailed(f"gradient matching diverged at step {step}: normalised loss {loss}")
        if progress is not None:
            progress(step, steps, loss)
        if monitor is not None and monitor(step, x.detach()):
            break
        if loss < tol * scale:
            break
        stalled = stalled + 1 if loss >= before * (1 - 1e-9) else 0
        if stalled >= 3:  # L-BFGS returned three times without a decrease: more steps will not help
            break
    return x.detach(), F.softmax(y_logits.detach(), -1), used, loss / scale
