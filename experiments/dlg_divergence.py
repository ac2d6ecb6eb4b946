"""Why the original DLG loop fails on some seeds: trace it step by step on one (image, seed) pair.

    python experiments/dlg_divergence.py --index 18 --seed 3 [--line-search]

Prints, per optimiser step, the objective, the largest |dummy pixel| and the largest soft-label logit, and the
class the soft label points to. Without a line search the first unit steps overshoot: the logits jump to ~45 with
the wrong class and the dummy image leaves [0, 1] by an order of magnitude; softmax and sigmoids saturate and the
run is stuck (or overflows to NaN). With `--line-search` (strong Wolfe) the same pair converges.
"""

from __future__ import annotations

import argparse
import math

import torch
from torch.nn import functional as F

from he_leak.bench.methods import make_problem, psnr
from he_leak.data import load_dataset


def trace(index: int, seed: int, *, steps: int, line_search: bool, classes: int = 100) -> None:
    x, y = load_dataset("photos").batch(index, 1)
    p = make_problem(torch.as_tensor(x), int(y[0]), model="lenet", classes=classes, seed=seed, index=index,
                     device=torch.device("cpu"))  # fmt: skip
    model, grads, truth, label = p.model, p.grads, p.truth, p.label
    params = list(model.parameters())
    gen = torch.Generator().manual_seed(seed)
    dummy = torch.randn(truth.shape, generator=gen).requires_grad_(True)
    logits = torch.randn((1, classes), generator=gen).requires_grad_(True)
    opt = torch.optim.LBFGS([dummy, logits], line_search_fn="strong_wolfe" if line_search else None)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.mean(torch.sum(-F.softmax(logits, -1) * F.log_softmax(model(dummy), -1), -1))
        dy = torch.autograd.grad(loss, params, create_graph=True)
        diff = sum(((a - b) ** 2).sum() for a, b in zip(dy, grads, strict=True))
        diff.backward()
        return diff

    print(f"pair ({index}, {seed}), true class {int(label)}, line search: {line_search}")
    print(f"{'step':>5} {'objective':>12} {'max|dummy|':>11} {'max logit':>10} {'class':>6} {'PSNR':>6}")
    for step in range(1, steps + 1):
        loss = float(opt.step(closure))
        if step <= 10 or step % 25 == 0 or not math.isfinite(loss):
            print(f"{step:5d} {loss:12.4g} {float(dummy.abs().max()):11.4g} {float(logits.max()):10.4g} "
                  f"{int(logits.argmax()):6d} {psnr(dummy, truth):6.1f}")  # fmt: skip
        if not math.isfinite(loss):
            print("diverged to NaN/inf")
            break


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", type=int, default=18)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--line-search", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(1)
    trace(a.index, a.seed, steps=a.steps, line_search=a.line_search)


if __name__ == "__main__":
    main()
