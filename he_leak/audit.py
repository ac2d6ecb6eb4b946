"""A structural leakage audit of a model, without training or attacking (seconds).

Per weight layer (Linear/Conv, forward order) the layer's input — B samples — is the unknown of two linear systems
(Chen & Campbell, arXiv 2111.10178 / 2210.13231; Zhu & Blaschko's R-GAP rank analysis):

* gradient constraints: ∂W = Σ_n δ_n a_nᵀ (Linear) or its im2col form (Conv) — one equation per weight entry;
* forward constraints: W a_n + b = u_n (known once the next layer is reconstructed) — one per output entry and sample;
  zero padding is known, so padded entries are not unknowns.

``rank`` is the rank of the stacked system for generic per-sample δ's: the gradient block of a Linear layer with h
outputs and d inputs has rank min(h, B)·d (exact), its forward block B·rank(W) (rank(W) computed on the seeded
model's weights); for convolutions the gradient block is bounded by min(#weights, B·#inputs) and the forward block
uses rank(W) of the unfolded kernel matrix times the number of positions, capped by the output size; of all the
equations, O² are always redundant (for kernels o, o': <W_o', ∂W_o> = <δ_o, z_o' − b_o'>, seen in the layerwise
attack's SVD).  The stacked rank is min(unknowns, gradient rank + forward rank, equations − O²): an upper bound.

Security index (this project's definition, in the spirit of Chen & Campbell, whose exact formula we could not
retrieve): with layers l = 1..L from the input and deficiency ratio r_l = (unknowns_l - rank_l) / unknowns_l,

    S = - Σ_l w_l r_l,   w_l = (L - l + 1) / Σ_k k,

so S ∈ [-1, 0]: 0 means every layer's input is determined (leaky), more negative means more secure, and layers near
the input weigh most (a deficiency there hides the data itself).  Qian et al.'s conditions are reported alongside:
hidden > B for the first FC layer, and h ≥ (d/d')²·C kernels for a conv layer (as many outputs as inputs).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from he_leak.models import ModelSpec, build_model

INVERTIBLE = (nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.Softplus)


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    unknowns: int
    constraints: int
    rank: int
    deficiency: int
    qian_ok: bool | None


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
    """(constraints, rank) of a Linear layer's stacked system for a batch: gradient min(h,B)·d, forward B·rank(W)."""
    constraints = h * d + batch * h
    return constraints, min(batch * d, min(h, batch) * d + batch * weight_rank)


def security_index(rows: list[LayerRow] | tuple[LayerRow, ...]) -> float:
    n = len(rows)
    if n == 0:
        return 0.0
    total = n * (n + 1) / 2
    return -sum((n - i) / total * r.deficiency / max(r.unknowns, 1) for i, r in enumerate(rows))


def audit(spec: ModelSpec, *, batch: int) -> Audit:
    """Per-layer unknowns/constraints/rank, Qian's conditions and the security index of `spec`'s seeded model."""
    model = build_model(spec)
    shapes: dict[nn.Module, tuple[torch.Size, torch.Size]] = {}
    hooks = [
        m.register_forward_hook(lambda mod, i, o: shapes.__setitem__(mod, (i[0].shape[1:], o.shape[1:])))
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    with torch.no_grad():
        model(torch.zeros(1, *spec.input_shape))
    for hk in hooks:
        hk.remove()
    rows: list[LayerRow] = []
    names = {m: n for n, m in model.named_modules()}
    for m in model.modules():
        if not isinstance(m, (nn.Linear, nn.Conv2d)):
            continue
        (ins, outs), w = shapes[m], m.weight.detach().double()
        n_in, n_out = math.prod(ins), math.prod(outs)
        if isinstance(m, nn.Linear):
            constraints, rank = linear_rank(m.out_features, m.in_features, batch, int(torch.linalg.matrix_rank(w)))
            qian = m.out_features > batch if not rows else None
            kind = f"linear {m.in_features}->{m.out_features}"
        else:
            positions = outs[1] * outs[2]
            kernel_rank = int(torch.linalg.matrix_rank(w.flatten(1)))
            constraints = w.numel() + batch * n_out
            fwd = batch * min(n_out, kernel_rank * positions, n_in)
            # Kernel pairs (o, o') tie the blocks: <W_o', dW_o> = <delta_o, z_o' - b_o'>: O^2 rows are redundant.
            redundant = m.out_channels**2
            rank = min(batch * n_in, min(w.numel(), batch * n_in) + fwd, constraints - redundant)
            c, d, d2 = ins[0], ins[1], outs[1]
            qian = m.out_channels >= (d / d2) ** 2 * c
            kind = f"conv {m.in_channels}->{m.out_channels} k{m.kernel_size[0]} s{m.stride[0]}"
        unknowns = batch * n_in
        rows.append(LayerRow(names[m], kind, unknowns, constraints, rank, unknowns - rank, qian))
    first = next((m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))), None)
    fc_bias = isinstance(first, nn.Linear) and first.bias is not None
    invertible = all(isinstance(m, INVERTIBLE) for m in model.modules() if isinstance(m, (nn.ReLU, *INVERTIBLE)))
    if fc_bias and (batch == 1 or rows[0].qian_ok):
        possible, reason = True, "first layer is fully connected with bias" + ("" if batch == 1 else " and hidden > B")
    elif batch == 1 and invertible and all(r.deficiency == 0 for r in rows):
        possible, reason = True, "every layer's linear system has full rank and the activations are invertible"
    else:
        possible, reason = False, "a layer's system is rank deficient, hidden ≤ B, or an activation is not invertible"
    return Audit(spec.name, batch, tuple(rows), security_index(rows), fc_bias, invertible, possible, reason)


def format_audit(a: Audit) -> str:
    """A readable table of the audit."""
    head = f"{'layer':<10} {'kind':<26} {'unknowns':>9} {'constraints':>11} {'rank':>8} {'deficiency':>10} {'qian':>5}"
    lines = [f"model {a.model}, batch {a.batch}", head, "-" * len(head)]
    for r in a.layers:
        q = "-" if r.qian_ok is None else ("yes" if r.qian_ok else "no")
        lines.append(
            f"{r.name:<10} {r.kind:<26} {r.unknowns:>9} {r.constraints:>11} {r.rank:>8} {r.deficiency:>10} {q:>5}"
        )
    lines.append(f"security index {a.security_index:.4f} (0 = leaky, -1 = every layer undetermined)")
    lines.append(f"exact reconstruction possible: {a.exact_reconstruction_possible} ({a.reason})")
    return "\n".join(lines)
