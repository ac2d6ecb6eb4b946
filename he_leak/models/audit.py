"""A structural leakage audit of a model, without training or attacking (seconds).

Per weight layer (Linear/Conv, forward order) the layer's input — B samples — is the unknown of two linear systems
(Chen & Campbell, arXiv 2111.10178 / 2210.13231; Zhu & Blaschko's R-GAP rank analysis):

* gradient constraints: ∂W = Σ_n δ_n a_nᵀ (Linear) or its im2col form (Conv) — one equation per weight entry;
* forward constraints: W a_n + b = z_n, one per output entry and sample whose pre-activation z is known from the
  layer's output, i.e. where the activation can be inverted there; zero padding is known, so padded entries are not
  unknowns.

Activity is counted from an actual forward and backward pass (the given inputs, else seeded uniform inputs in the
box [0, 1], with seeded labels and cross-entropy): a ReLU unit that is off gives no forward equation (z ≤ 0 is all
its output says) and a zero δ; ``square`` gives none (z² loses the sign); the cubic ``sigmoid3`` gives one only where
its value has a single real pre-image (|z| beyond twice its turning point), elsewhere three branches fit.

``rank``: for B = 1 it is exact — the rank of the stacked system built from the pass's δ and W, each block scaled
to unit norm, at the layerwise attack's tolerance (a Linear layer: d when δ ≠ 0, else rank of W's known rows) —
up to DENSE_LIMIT entries; larger convolutions and every B > 1 get an upper bound (``exact`` False): Linear
min(B·d, rank(D)·d + Σ_n rank(W_known(n))), Conv min(B·#inputs, min(#weights, B·#inputs) + Σ_n rank(F_n) − O²), the
O² term (kernel pairs: <W_o', ∂W_o> = <δ_o, z_o' − b_o'>) only where every output is known.  The output layer keeps
all its forward rows (the logits are known given δ and the label).

Security index (this project's definition, in the spirit of Chen & Campbell, whose exact formula we could not
retrieve): with layers l = 1..L from the input and deficiency ratio r_l = (unknowns_l - rank_l) / unknowns_l,

    S = - Σ_l w_l r_l,   w_l = (L - l + 1) / Σ_k k,

so S ∈ [-1, 0]: 0 means every layer's input is determined (leaky), more negative means more secure, and layers near
the input weigh most (a deficiency there hides the data itself).  Qian et al.'s sufficient conditions are reported
alongside: for the first FC layer one hidden unit for B = 1 and more hidden units than samples for B > 1; h ≥ (d/d')²·C
kernels for a conv layer (as many outputs as inputs).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any

import scipy.linalg
import torch
from threadpoolctl import threadpool_limits
from torch import nn
from torch.nn import functional as F  # noqa: N812

from he_leak.errors import ConfigError
from he_leak.models import ModelSpec, Sigmoid3, Square, build_model
from he_leak.models.audit_chain import chain_model
from he_leak.models.losses import SIGMOID3
from he_leak.text import fixed

INVERTIBLE = (nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.Softplus)  # z is known wherever the output is
PARTIAL = (nn.ReLU, Square, Sigmoid3)  # z is known only at some units (ReLU: active; square: none; sigmoid3: rare)
RANK_TOL = 1e-9  # relative singular-value tolerance of the exact rank (the layerwise attack's dense solve uses it)
DENSE_LIMIT = 6_000_000  # stacked systems with at most this many entries get an exact rank (the layerwise limit)
MATRIX_RANK_TOL = 1e-9  # relative tolerance for the small ranks of W's rows and of the δ matrix


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    unknowns: int
    constraints: int
    rank: int
    deficiency: int
    qian_ok: bool | None
    exact: bool = False  # rank computed from the stacked system (B = 1), not bounded
    known_outputs: float = 1.0  # fraction of (sample, output) pairs whose pre-activation z is known


@dataclass(frozen=True)
class Audit:
    model: str
    batch: int
    layers: tuple[LayerRow, ...]
    security_index: float
    first_layer_fc_with_bias: bool
    invertible_activations: bool
    exact_reconstruction_possible: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = [asdict(r) for r in self.layers]
        return d


def linear_rank(h: int, d: int, batch: int, weight_rank: int) -> tuple[int, int]:
    """(constraints, rank bound) of a Linear layer with every output known and generic δ's: gradient min(h,B)·d,
    forward B·rank(W)."""
    constraints = h * d + batch * h
    return constraints, min(batch * d, min(h, batch) * d + batch * weight_rank)


def security_index(rows: list[LayerRow] | tuple[LayerRow, ...]) -> float:
    n = len(rows)
    if n == 0:
        return 0.0
    total = n * (n + 1) / 2
    return 0.0 - sum((n - i) / total * r.deficiency / max(r.unknowns, 1) for i, r in enumerate(rows))  # not -0.0


def qian_fc(hidden: int, batch: int) -> bool:
    """Qian et al.'s sufficient condition for the first FC layer: one unit for one input, h > B for a batch."""
    return hidden >= 1 if batch == 1 else hidden > batch


def known_preactivations(act: nn.Module | None, z: torch.Tensor) -> torch.Tensor:
    """Where z can be read back from act(z) (None: the layer's output is used as is)."""
    if act is None or isinstance(act, INVERTIBLE):
        return torch.ones_like(z, dtype=torch.bool)
    if isinstance(act, nn.ReLU):
        return z > 0
    if isinstance(act, Sigmoid3):  # c0 + c1 z + c3 z³ has one real pre-image only beyond ±2·z*, z* = √(c1 / -3c3)
        turn = math.sqrt(SIGMOID3[1] / (-3 * SIGMOID3[3]))
        return z.abs() > 2 * turn
    return torch.zeros_like(z, dtype=torch.bool)  # square, and anything not known to be invertible


def _matrix_rank(m: torch.Tensor) -> int:
    return int(torch.linalg.matrix_rank(m, rtol=MATRIX_RANK_TOL)) if m.numel() else 0


def _stacked_rank(blocks: list[torch.Tensor]) -> int:
    """Rank of the row-stacked blocks, each scaled to unit Frobenius norm (as the layerwise attack does)."""
    kept = [b / b.norm() for b in blocks if b.numel() and float(b.norm()) > 0]
    if not kept:
        return 0
    # one BLAS thread: threaded OpenBLAS on the shared 2-core machine measured 2.4 s for a 1386×768 system (convnet
    # conv2 on digits) against 0.1 s single-threaded
    with threadpool_limits(limits=1, user_api="blas"):
        s = scipy.linalg.svdvals(torch.cat(kept).numpy(), check_finite=False)
    return int((s > RANK_TOL * s[0]).sum())


def _conv_blocks(layer: nn.Conv2d, in_shape: tuple[int, ...], delta: torch.Tensor, known: torch.Tensor):
    """Dense gradient block (∂W = Σ_p δ[o,p] unfold(a)[:, p]) and forward block (known rows of W·unfold(a)) of one
    sample; padded pixels are not unknowns."""
    n = math.prod(in_shape)
    ramp = torch.arange(1, n + 1, dtype=torch.float64).reshape(1, *in_shape)
    idx = F.unfold(ramp, layer.kernel_size, padding=layer.padding, stride=layer.stride)[0].round().long() - 1
    ck, p = idx.shape
    o = layer.out_channels
    kk, pp = (idx >= 0).nonzero(as_tuple=True)
    d = delta.reshape(o, p)
    grad = torch.zeros(o * ck, n, dtype=torch.float64)
    rows = (torch.arange(o)[:, None] * ck + kk[None]).flatten()
    grad.index_put_((rows, idx[kk, pp].repeat(o)), d[:, pp].flatten(), accumulate=True)
    w = layer.weight.detach().double().reshape(o, ck)
    fwd = torch.zeros(o * p, n, dtype=torch.float64)
    rows_f = (torch.arange(o)[:, None] * p + pp[None]).flatten()
    fwd.index_put_((rows_f, idx[kk, pp].repeat(o)), w[:, kk].flatten(), accumulate=True)
    return grad, fwd[known.reshape(-1)]


@dataclass
class _Pass:
    """One weight layer seen in the forward/backward pass: its input a (B × ...), pre-activation z, δ = ∂ℓ_n/∂z_n
    and the activation applied to z (None when the next module is not an activation)."""

    name: str
    layer: nn.Linear | nn.Conv2d
    a: torch.Tensor
    z: torch.Tensor
    act: nn.Module | None = None
    delta: torch.Tensor | None = None


def _forward_backward(model: nn.Module, inputs: torch.Tensor, seed: int) -> list[_Pass]:
    """Run the float64 model on `inputs`; record each weight layer's input, output, δ and following activation."""
    model = copy.deepcopy(model).double().eval()
    names = {m: n for n, m in model.named_modules()}
    calls: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []
    leaves = [m for m in model.modules() if not list(m.children())]

    def record(mod: nn.Module, i: tuple[torch.Tensor, ...], o: torch.Tensor) -> None:
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            o.retain_grad()
        calls.append((mod, i[0], o))

    hooks = [m.register_forward_hook(record) for m in leaves if not isinstance(m, nn.Identity)]  # folded BatchNorms
    try:
        logits = model(inputs.double())
    finally:
        for hk in hooks:
            hk.remove()
    labels = torch.randint(logits.shape[1], (logits.shape[0],), generator=torch.Generator().manual_seed(seed))
    nn.functional.cross_entropy(logits, labels, reduction="sum").backward()
    passes: list[_Pass] = []
    for k, (mod, inp, out) in enumerate(calls):
        if not isinstance(mod, (nn.Linear, nn.Conv2d)):
            continue
        nxt = calls[k + 1] if k + 1 < len(calls) else None
        act = nxt[0] if nxt is not None and nxt[1] is out and isinstance(nxt[0], INVERTIBLE + PARTIAL) else None
        delta = out.grad if out.grad is not None else torch.zeros_like(out)
        passes.append(_Pass(names[mod], mod, inp.detach(), out.detach(), act, delta.detach()))
    return passes


def _linear_row(p: _Pass, known: torch.Tensor, batch: int, first: bool) -> LayerRow:
    m = p.layer
    h, d = m.out_features, m.in_features
    w = m.weight.detach().double()
    delta = p.delta.reshape(batch, h)
    forward = [_matrix_rank(w[known[n]]) for n in range(batch)]
    grad_rank = _matrix_rank(delta) * d
    rank = min(batch * d, grad_rank + sum(forward))
    constraints = h * d + int(known.sum())
    qian = qian_fc(h, batch) if first else None
    return LayerRow(p.name, f"linear {d}->{h}", batch * d, constraints, rank, batch * d - rank, qian, batch == 1,
                    float(known.double().mean()))  # fmt: skip


def _conv_row(p: _Pass, known: torch.Tensor, batch: int) -> LayerRow:
    m = p.layer
    in_shape, out_shape = tuple(p.a.shape[1:]), tuple(p.z.shape[1:])
    n_in = math.prod(in_shape)
    o, positions = m.out_channels, out_shape[1] * out_shape[2]
    constraints = m.weight.numel() + int(known.sum())
    plain = m.groups == 1 and m.dilation == (1, 1) and not isinstance(m.padding, str) and m.padding_mode == "zeros"
    exact = plain and batch == 1 and (m.weight.numel() + int(known.sum())) * n_in <= DENSE_LIMIT
    if exact:
        grad, fwd = _conv_blocks(m, in_shape, p.delta[0], known[0])
        rank = _stacked_rank([grad, fwd])
    else:
        w = m.weight.detach().double().flatten(1)
        kernel_rank = _matrix_rank(w)
        fwd_rank = sum(min(int(known[n].sum()), kernel_rank * positions, n_in) for n in range(batch))
        redundant = o**2 if bool(known.all()) else 0
        rank = min(batch * n_in, min(m.weight.numel(), batch * n_in) + fwd_rank, constraints - redundant)
    c, d, d2 = in_shape[0], in_shape[1], out_shape[1]
    qian = m.out_channels >= (d / d2) ** 2 * c
    kind = f"conv {m.in_channels}->{m.out_channels} k{m.kernel_size[0]} s{m.stride[0]}"
    return LayerRow(p.name, kind, batch * n_in, constraints, rank, batch * n_in - rank, qian, exact,
                    float(known.double().mean()))  # fmt: skip


def audit(spec: ModelSpec, *, batch: int, inputs: torch.Tensor | None = None, seed: int = 0,
          model: nn.Module | None = None) -> Audit:
    """Per-layer unknowns/constraints/rank, Qian's conditions and the security index of `spec`'s seeded model (or
    `model`, e.g. a trained one), with unit activity from a pass over `inputs` (B × input shape; default: B uniform
    inputs in [0, 1] drawn from `seed`). Normalisation layers are folded or refused (he_leak.models.audit_chain)."""
    if batch < 1:
        raise ConfigError(f"--batch {batch}: the audit needs a batch of at least 1 sample")
    if inputs is None:
        inputs = torch.rand((batch, *spec.input_shape), generator=torch.Generator().manual_seed(seed))
    if tuple(inputs.shape) != (batch, *spec.input_shape):
        raise ConfigError(
            f"audit inputs of shape {tuple(inputs.shape)}; give {batch} × {spec.input_shape} (one per sample)"
        )
    model = chain_model(build_model(spec) if model is None else model, inputs, activations=INVERTIBLE + PARTIAL)
    passes = _forward_backward(model, inputs, seed)
    rows: list[LayerRow] = []
    for k, p in enumerate(passes):
        known = known_preactivations(p.act, p.z).reshape(batch, -1)
        if k == len(passes) - 1:  # the logits: known given δ and the label
            known = torch.ones_like(known)
        if isinstance(p.layer, nn.Linear):
            rows.append(_linear_row(p, known, batch, first=not rows))
        else:
            rows.append(_conv_row(p, known, batch))
    first = passes[0].layer if passes else None
    fc_bias = isinstance(first, nn.Linear) and first.bias is not None
    acts = [m for m in model.modules() if isinstance(m, INVERTIBLE + PARTIAL)]
    invertible = all(isinstance(m, INVERTIBLE) for m in acts)
    bounded = [r.name for r in rows if not r.exact]
    if fc_bias and rows[0].qian_ok:
        possible = True
        reason = "first layer is fully connected with bias" + (" (one unit suffices)" if batch == 1 else " and h > B")
    elif batch == 1 and all(r.deficiency == 0 for r in rows):
        possible = True
        reason = "every layer's linear system has full rank for the audited input"
        reason += f" (rank bounds only for {', '.join(bounded)})" if bounded else ""
    else:
        possible = False
        reason = "a layer's system is rank deficient for the audited inputs, or h ≤ B at the first FC layer"
    return Audit(spec.name, batch, tuple(rows), security_index(rows), fc_bias, invertible, possible, reason)


def format_audit(a: Audit) -> str:
    """A readable table of the audit."""
    head = (
        f"{'layer':<10} {'kind':<26} {'unknowns':>9} {'constraints':>11} {'rank':>8} {'deficiency':>10} "
        f"{'known z':>7} {'qian':>5}"
    )
    lines = [f"model {a.model}, batch {a.batch}", head, "-" * len(head)]
    for r in a.layers:
        q = "-" if r.qian_ok is None else ("yes" if r.qian_ok else "no")
        rank = f"{r.rank}" if r.exact else f"≤{r.rank}"
        lines.append(
            f"{r.name:<10} {r.kind:<26} {r.unknowns:>9} {r.constraints:>11} {rank:>8} {r.deficiency:>10} "
            f"{r.known_outputs:>7.0%} {q:>5}"
        )
    lines.append(f"security index {fixed(a.security_index, 4)} (0 = leaky, -1 = every layer undetermined)")
    lines.append(f"exact reconstruction possible: {a.exact_reconstruction_possible} ({a.reason})")
    lines.append("rank: exact from the stacked system, ≤ an upper bound; known z: outputs with a forward equation")
    return "\n".join(lines)
