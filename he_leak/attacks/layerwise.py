"""Layer-wise reconstruction backward from the output as a chain of linear systems (Chen & Campbell, "Understanding
training-data leakage from gradients in neural networks for image classification", arXiv 2111.10178; the same
recursion as Zhu & Blaschko's R-GAP).  Batch 1.

For a weight layer ``z = W a + b`` (Linear, or Conv2d written with its unfolded input) and one sample:

* gradient constraints: ``∂W = δ aᵀ`` (Linear) or ``∂W[o, ck] = Σ_p δ[o, p] a[idx(ck, p)]`` (Conv2d; ``idx`` maps a
  kernel entry and an output position to an input pixel, padding to no pixel: padded entries are known zeros and are
  not unknowns) — linear in the layer input ``a`` once ``δ = ∂ℓ/∂z`` is known;
* forward constraints: ``W a = z - b`` — linear in ``a`` once ``z`` is known, which it is when the layer's output
  went through an invertible activation whose value (the next layer's input) was already reconstructed:
  ``z = act⁻¹(a_next)``.  For ReLU only the active units give a forward equation.

Backward from the output: the last layer's bias gradient is ``δ_L = φ(z_L) - onehot(y)`` (φ the loss's link, softmax
for cross-entropy), so its input ``h``
is the least-squares solution of ``∂W_L = δ_L hᵀ``; the logits ``z_L = W_L h + b_L`` then check ``δ_L`` against the
label (from :func:`he_leak.attacks.labels.recover_labels`).  Going down, each layer's δ is ``δ = (∂z_next/∂a)ᵀ δ_next ⊙
act'(z)`` — or, for a Linear layer with a bias, the bias gradient itself, which *is* δ for one sample (the propagated
one is then only a check).  Each layer's two blocks are stacked, each scaled to unit norm, and solved by least squares
in float64: a dense SVD solve (exact rank and minimum-norm solution around the centre of the activation's range) for
small systems, LSQR for large ones (rank not computed), a closed form (Woodbury) for Linear layers.  ``info["layers"]``
holds per layer (output side first) unknowns, equations, rank, deficiency, residuals and the solver used.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import lsqr
from threadpoolctl import threadpool_limits
from torch import nn
from torch.nn import functional as F  # noqa: N812

from he_leak.attacks.analytic import project_if_exact
from he_leak.attacks.base import ATTACKS, Attack, project, refuse_local_steps
from he_leak.attacks.labels import recover_labels
from he_leak.errors import AttackFailed
from he_leak.models.losses import LOSSES
from he_leak.records import Observation, Reconstruction

RANK_TOL = 1e-9  # singular values below this fraction of the largest count as zero (dense solve)
DENSE_LIMIT = 6_000_000  # stacked systems with at most this many entries are solved densely (SVD, exact rank)
LSQR_TOL = 1e-14
LSQR_ITERATIONS = 20_000
FORWARD_WEIGHT = 1.0  # weight of the (unit-normalised) forward block relative to the gradient block
RELU_TOL = 1e-5  # ReLU outputs below this fraction of the largest count as inactive (float32 noise)
RANGE_EPS = 1e-12  # distance kept from the open ends of an activation's range before inverting it
ACTIVATIONS = (nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ReLU, nn.Softplus)
PASSIVE = (nn.Flatten, nn.Identity, nn.Dropout)


@dataclass
class _Step:
    """One weight layer (float64 copy) with the activation applied to its output and its gradient indices."""

    name: str
    layer: nn.Linear | nn.Conv2d
    in_shape: tuple[int, ...]  # one sample's input as the layer sees it
    out_shape: tuple[int, ...]
    iw: int
    ib: int | None
    act: nn.Module | None = None
    info: dict = field(default_factory=dict)


def chain(obs: Observation) -> list[_Step]:
    """The model as a chain of weight layers, each followed by at most one activation; anything else (skip
    connections, pooling, normalisation, grouped or dilated convolutions) raises AttackFailed naming it."""
    model = copy.deepcopy(obs.model).double().eval()
    index = {id(p): i for i, p in enumerate(model.parameters())}
    names = {m: n for n, m in model.named_modules()}
    calls: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []
    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(lambda mod, i, o: calls.append((mod, i[0].detach(), o.detach()))) for m in leaves]
    lo, hi = obs.bounds
    gen = torch.Generator().manual_seed(0)
    probe = lo + (hi - lo) * torch.rand((1, *obs.input_shape), generator=gen, dtype=torch.float64)
    try:
        with torch.no_grad():
            out = model(probe)
    finally:
        for h in hooks:
            h.remove()
    steps: list[_Step] = []
    previous = probe
    for module, inp, o in calls:
        if inp.numel() != previous.numel() or not torch.equal(inp.flatten(), previous.flatten()):
            raise AttackFailed(
                f"layerwise needs a plain chain of layers; the input of {names[module]} ({type(module).__name__}) "
                "is not the previous layer's output"
            )
        previous = o
        if isinstance(module, PASSIVE):
            continue
        if isinstance(module, nn.Linear | nn.Conv2d):
            if isinstance(module, nn.Conv2d) and (
                module.groups != 1
                or module.dilation != (1, 1)
                or isinstance(module.padding, str)
                or module.padding_mode != "zeros"
            ):
                raise AttackFailed(
                    f"layerwise handles plain convolutions; {names[module]} is grouped, dilated or not zero-padded"
                )
            ib = index[id(module.bias)] if module.bias is not None else None
            steps.append(
                _Step(names[module], module, tuple(inp.shape[1:]), tuple(o.shape[1:]), index[id(module.weight)], ib)
            )
            continue
        if isinstance(module, ACTIVATIONS):
            if not steps or steps[-1].act is not None:
                raise AttackFailed(f"layerwise needs one activation after each weight layer; see {names[module]}")
            steps[-1].act = module
            continue
        raise AttackFailed(
            f"layerwise handles Linear, Conv2d, activations and Flatten; {names[module]} is {type(module).__name__}"
        )
    if not steps or not torch.equal(previous.flatten(), out.flatten()):
        raise AttackFailed("layerwise needs a model that is a chain of weight layers ending in the logits")
    if steps[-1].act is not None:
        raise AttackFailed("layerwise needs a linear output layer (logits), not an activation at the end")
    if not isinstance(steps[-1].layer, nn.Linear):
        raise AttackFailed("layerwise needs a fully connected output layer")
    return steps


# ------------------------------------------------------------------------------------------------- activations
def _range_centre(act: nn.Module | None) -> float:
    """The point a minimum-norm solution is taken around: the middle of the activation's range."""
    return 0.5 if isinstance(act, nn.Sigmoid) else 0.0


def _clamp_range(a: torch.Tensor, act: nn.Module) -> torch.Tensor:
    if isinstance(act, nn.Sigmoid):
        return a.clamp(RANGE_EPS, 1 - RANGE_EPS)
    if isinstance(act, nn.Tanh):
        return a.clamp(-1 + RANGE_EPS, 1 - RANGE_EPS)
    if isinstance(act, nn.Softplus | nn.ReLU):
        return a.clamp(min=RANGE_EPS if isinstance(act, nn.Softplus) else 0.0)
    return a


def invert(act: nn.Module, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-activations z with act(z) = a (clamped into the range first), and the mask of units where z is known
    (all of them, except ReLU's inactive units)."""
    a = _clamp_range(a, act)
    known = torch.ones_like(a, dtype=torch.bool)
    if isinstance(act, nn.Sigmoid):
        z = torch.log(a) - torch.log1p(-a)
    elif isinstance(act, nn.Tanh):
        z = torch.atanh(a)
    elif isinstance(act, nn.LeakyReLU):
        z = torch.where(a >= 0, a, a / act.negative_slope)
    elif isinstance(act, nn.Softplus):
        beta = act.beta
        z = torch.where(a * beta > act.threshold, a, (a * beta + torch.log(-torch.expm1(-a * beta))) / beta)
    elif isinstance(act, nn.ReLU):  # inactive units (a ≈ 0) have an unknown z ≤ 0; take z = 0 there (relu'(0) = 0)
        known = a > RELU_TOL * float(a.abs().max())
        z = torch.where(known, a, torch.zeros_like(a))
    else:  # pragma: no cover - chain() admits only the activations above
        raise AttackFailed(f"cannot invert {type(act).__name__}")
    return z, known


def act_derivative(act: nn.Module, z: torch.Tensor) -> torch.Tensor:
    z = z.detach().clone().requires_grad_(True)
    (d,) = torch.autograd.grad(act(z).sum(), z)
    return d.detach()


# ------------------------------------------------------------------------------------------------- systems
def unfold_index(step: _Step) -> torch.Tensor:
    """(C·K², P) long tensor: the input pixel each kernel entry sees at each output position, -1 for padding."""
    layer = step.layer
    assert isinstance(layer, nn.Conv2d)
    n = math.prod(step.in_shape)
    ramp = torch.arange(1, n + 1, dtype=torch.float64).reshape(1, *step.in_shape)
    cols = F.unfold(ramp, layer.kernel_size, padding=layer.padding, stride=layer.stride)[0]
    return cols.round().long() - 1


def conv_blocks(
    step: _Step, delta: torch.Tensor, z: torch.Tensor | None, known: torch.Tensor | None, gw: torch.Tensor
) -> tuple[sp.csr_matrix, np.ndarray, sp.csr_matrix | None, np.ndarray | None]:
    """Sparse gradient block (∂W = δ ⊗ unfold(a)) and forward block (W·unfold(a) = z - b) of a convolution."""
    layer = step.layer
    idx = unfold_index(step)  # (CK², P)
    ck, p = idx.shape
    o = layer.out_channels
    n = math.prod(step.in_shape)
    d = delta.reshape(o, p)
    valid = idx >= 0
    # gradient rows o·CK² + k, one entry per (o, k, p) whose pixel is not padding
    kk, pp = valid.nonzero(as_tuple=True)
    rows = (torch.arange(o)[:, None] * ck + kk[None]).flatten()
    cols = idx[kk, pp].repeat(o)
    vals = d[:, pp].flatten()
    grad = sp.csr_matrix((vals.numpy(), (rows.numpy(), cols.numpy())), shape=(o * ck, n))
    grad_rhs = gw.reshape(o, ck).flatten().numpy()
    if z is None:
        return grad, grad_rhs, None, None
    w = layer.weight.detach().reshape(o, ck)
    rows_f = (torch.arange(o)[:, None] * p + pp[None]).flatten()
    cols_f = idx[kk, pp].repeat(o)
    vals_f = w[:, kk].flatten()
    fwd = sp.csr_matrix((vals_f.numpy(), (rows_f.numpy(), cols_f.numpy())), shape=(o * p, n))
    bias = layer.bias.detach() if layer.bias is not None else torch.zeros(o, dtype=torch.float64)
    rhs = (z.reshape(o, p) - bias[:, None]).flatten()
    keep = known.reshape(-1).numpy()
    return grad, grad_rhs, fwd[keep], rhs.numpy()[keep]


def _unit(matrix: sp.spmatrix | np.ndarray, rhs: np.ndarray) -> float:
    """1/‖matrix‖_F (so each block weighs the same), or 0 for an empty block."""
    norm = sp.linalg.norm(matrix) if sp.issparse(matrix) else float(np.linalg.norm(matrix))
    return 1.0 / norm if norm > 0 and rhs.size else 0.0


def solve_stacked(
    blocks: list[tuple[sp.spmatrix, np.ndarray, float]], n: int, centre: float
) -> tuple[np.ndarray, dict]:
    """Least squares of the weighted, stacked blocks; minimum-norm around `centre` where rank deficient."""
    a = sp.vstack([m * w for m, _, w in blocks]).tocsr()
    rhs = np.concatenate([r * w for _, r, w in blocks])
    x0 = np.full(n, centre)
    rhs = rhs - a @ x0
    info: dict = {"equations": int(a.shape[0])}
    if a.shape[0] * n <= DENSE_LIMIT:
        # one BLAS thread: these systems are small, and threaded OpenBLAS on a shared 2-core machine measured 10×
        # slower (LeNet on faces: 9.4 s instead of 0.8 s)
        with threadpool_limits(limits=1, user_api="blas"):
            sol, _, rank, s = scipy.linalg.lstsq(a.toarray(), rhs, cond=RANK_TOL, lapack_driver="gelsd")
        info.update(solver="dense", rank=int(rank), smallest_singular=float(s[min(len(s), n) - 1] / s[0]))
    else:
        out = lsqr(a, rhs, atol=LSQR_TOL, btol=LSQR_TOL, iter_lim=LSQR_ITERATIONS)
        sol = out[0]
        info.update(solver="lsqr", rank=None, lsqr_iterations=int(out[2]))
        if a.shape[0] < n:  # fewer equations than unknowns: certainly deficient
            info["rank_bound"] = int(a.shape[0])
    return sol + x0, info


def linear_solve(
    w: torch.Tensor, delta: torch.Tensor, gw: torch.Tensor, c: torch.Tensor | None, centre: float
) -> tuple[torch.Tensor, dict]:
    """min wg²‖δaᵀ - ∂W‖² + wf²‖W a - c‖² in closed form: (α I + β WᵀW) a = …, α = wg²‖δ‖², via Woodbury."""
    d = w.shape[1]
    dd = float(delta @ delta)
    wg = 1.0 / (math.sqrt(dd) * math.sqrt(d)) if dd > 0 else 0.0  # ‖δ ⊗ I‖_F = ‖δ‖·√d
    wnorm = float(w.norm())
    wf = FORWARD_WEIGHT / wnorm if c is not None and c.numel() and wnorm > 0 else 0.0
    x0 = torch.full((d,), centre, dtype=torch.float64)
    v = wg**2 * (gw.T @ delta - dd * x0)
    if wf > 0:
        v = v + wf**2 * (w.T @ (c - w @ x0))
    alpha, beta = wg**2 * dd, wf**2
    if alpha > 0 and dd > 1e-300:
        if beta > 0:
            small = torch.linalg.solve(alpha / beta * torch.eye(w.shape[0], dtype=w.dtype) + w @ w.T, w @ v)
            sol = (v - w.T @ small) / alpha
        else:
            sol = v / alpha
        rank = d
    elif beta > 0:  # δ = 0: only the forward block, minimum norm
        sol = torch.linalg.lstsq(w, c - w @ x0, rcond=RANK_TOL, driver="gelsd").solution
        rank = int(torch.linalg.matrix_rank(w, rtol=RANK_TOL))
    else:
        raise AttackFailed("a layer has neither a non-zero δ nor a forward constraint: nothing determines its input")
    equations = delta.numel() * d + (w.shape[0] if wf else 0)
    return sol + x0, {"solver": "closed-form", "rank": rank, "equations": equations}


# ------------------------------------------------------------------------------------------------- the attack
Known = tuple[torch.Tensor, torch.Tensor] | None  # (z, mask): the known outputs of the layer being solved
def _relative(residual: torch.Tensor, reference: torch.Tensor) -> float:
    ref = float(reference.norm())
    return float(residual.norm()) / ref if ref > 0 else float(residual.norm())


@ATTACKS.register("layerwise")
class Layerwise(Attack):
    """Backward, layer by layer: each layer's input from the linear system of its weights, its gradient and the
    reconstruction of the layer above (batch 1; invertible activations, ReLU with partial forward constraints)."""

    name = "layerwise"
    default_iterations = 1

    def check(self, obs: Observation) -> None:
        super().check(obs)
        refuse_local_steps(self.name, obs)

    def reconstruct(self, obs: Observation) -> Reconstruction:
        start = time.perf_counter()
        steps, grads, labels, delta = _start(obs)
        layers: list[dict] = []
        z_known: Known = None
        a = torch.empty(0)
        for depth, step in enumerate(reversed(steps)):
            below = steps[len(steps) - depth - 2] if depth < len(steps) - 1 else None
            centre = _range_centre(below.act) if below is not None else 0.5 * (obs.bounds[0] + obs.bounds[1])
            a, row = _solve_layer(step, delta, grads[step.iw], z_known, centre)
            back, out = _residuals(step, a, delta, grads[step.iw], z_known, row)
            if depth == 0:  # the output check: φ(W h + b) - onehot(label) against the observed δ
                p = LOSSES[obs.loss].link(out.reshape(1, -1))[0]
                p[int(labels[0])] -= 1
                row["output_check"] = _relative(p - delta, delta)
            layers.append(row)
            self.report(depth, max(row["residual_gradient"], row.get("residual_forward", 0.0)))
            if below is None:
                break
            delta, z_known = _delta_below(below, a, back, grads)
        for row, step in zip(layers, reversed(steps), strict=False):
            row.update(step.info)
        return _reconstruction(obs, a, layers, labels, start)


def _start(obs: Observation) -> tuple[list[_Step], list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """The layer chain, the float64 gradients, the recovered label and δ at the logits; AttackFailed when the
    observation cannot be attacked layer by layer."""
    if obs.batch != 1:
        raise AttackFailed(
            f"layerwise reconstructs one input (batch 1), not a batch of {obs.batch}: the per-sample δ's of a "
            "batch are not linear unknowns; use --attack analytic for batches"
        )
    if obs.mask is not None and not all(bool(m.all()) for m in obs.mask):
        raise AttackFailed("layerwise needs every layer's gradient; part of it is hidden (encrypted) here")
    steps = chain(obs)
    grads = [g.detach().cpu().double() for g in obs.gradients]
    labels = recover_labels(obs)
    if steps[-1].ib is None:
        raise AttackFailed("layerwise needs a bias in the output layer (its gradient is δ at the logits)")
    delta = grads[steps[-1].ib].flatten()
    if float(delta.norm()) == 0.0:
        raise AttackFailed("the output layer's bias gradient is zero: nothing to reconstruct from")
    return steps, grads, labels, delta


def _solve_layer(step: _Step, delta: torch.Tensor, gw: torch.Tensor, z_known: Known,
                 centre: float) -> tuple[torch.Tensor, dict]:  # fmt: skip
    """A layer's input from its gradient (and, when the layer above was reconstructed, its known outputs)."""
    layer, n = step.layer, math.prod(step.in_shape)
    row: dict = {"name": step.name, "unknowns": n}
    if isinstance(layer, nn.Linear):
        row["kind"] = f"linear {layer.in_features}->{layer.out_features}"
        w, c = layer.weight.detach(), None
        if z_known is not None:
            z, mask = z_known
            bias = layer.bias.detach() if layer.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
            w, c = w[mask.flatten()], (z.flatten() - bias)[mask.flatten()]
        a, solved = linear_solve(w, delta, gw, c, centre)
    else:
        row["kind"] = f"conv {layer.in_channels}->{layer.out_channels} k{layer.kernel_size[0]} s{layer.stride[0]}"
        z, mask = z_known if z_known is not None else (None, None)
        grad, grad_rhs, fwd, fwd_rhs = conv_blocks(step, delta, z, mask, gw)
        blocks = [(grad, grad_rhs, _unit(grad, grad_rhs))]
        if fwd is not None:
            blocks.append((fwd, fwd_rhs, FORWARD_WEIGHT * _unit(fwd, fwd_rhs)))
        sol, solved = solve_stacked(blocks, n, centre)
        a = torch.from_numpy(sol)
    row.update(solved)
    if row.get("rank") is not None:
        row["deficiency"] = n - row["rank"]
    return a, row


def _residuals(step: _Step, a: torch.Tensor, delta: torch.Tensor, gw: torch.Tensor, z_known: Known,
               row: dict) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Both blocks' residuals at the solution into `row`; the gradient wrt the layer's input and its output."""
    x = a.reshape(1, *step.in_shape).clone().requires_grad_(True)
    out = step.layer(x)
    gw_hat, back = torch.autograd.grad(out, [step.layer.weight, x], delta.reshape(out.shape))
    row["residual_gradient"] = _relative(gw_hat - gw, gw)
    if z_known is not None:
        z, mask = z_known
        row["residual_forward"] = _relative((out.detach().flatten() - z.flatten())[mask.flatten()], z)
    return back, out.detach()


def _delta_below(below: _Step, a: torch.Tensor, back: torch.Tensor,
                 grads: list[torch.Tensor]) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """δ of the layer below (propagated, or its own bias gradient for a Linear layer with a bias) and its known
    outputs (the inverted activation of this layer's reconstructed input); the check goes into below.info."""
    act = below.act
    if act is None:
        raise AttackFailed(f"layerwise needs an activation after {below.name} (two linear layers in a row)")
    z_below, mask_below = invert(act, _clamp_range(a.reshape(below.out_shape), act))
    propagated = back.reshape(below.out_shape) * act_derivative(act, z_below)
    if isinstance(below.layer, nn.Linear) and below.ib is not None:
        delta = grads[below.ib].flatten()
        below.info = {"delta": "bias", "delta_check": _relative(propagated.flatten() - delta, delta)}
    else:
        delta = propagated
        below.info = {"delta": "propagated"}
        if below.ib is not None:
            sums = propagated.reshape(propagated.shape[0], -1).sum(1)
            below.info["delta_check"] = _relative(sums - grads[below.ib], grads[below.ib])
    return delta, (z_below, mask_below)


def _reconstruction(obs: Observation, a: torch.Tensor, layers: list[dict], labels: torch.Tensor,
                    start: float) -> Reconstruction:  # fmt: skip
    """The input layer's solution, projected onto the box when a layer was rank deficient (or when exact)."""
    deficient = [r["name"] for r in layers if r.get("deficiency") or r.get("rank_bound") is not None]
    x = a.reshape(1, *obs.input_shape)
    x, projected = (project(x, obs), True) if deficient else project_if_exact(x, obs)
    loss = max(max(r["residual_gradient"], r.get("residual_forward", 0.0)) for r in layers)
    info = {"layers": layers, "rank_deficient": deficient, "projected": projected,
            "seconds": time.perf_counter() - start}  # fmt: skip
    return Reconstruction(inputs=x.float(), labels=labels, iterations=len(layers), loss=loss,
                          recovered=0 if deficient else 1, info=info)  # fmt: skip
