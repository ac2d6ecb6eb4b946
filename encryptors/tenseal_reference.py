"""TenSEAL's own API as the reference the benchmarks compare against (experiments/bench_packing.py and
bench_circuit.py), so that tenseal stays imported only inside encryptors/. Nothing in he_leak uses these."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tenseal as ts


def ckks_context(*, poly_modulus_degree: int, coeff_mod_bit_sizes: list[int], scale: float, threads: int = 1,
                 galois: bool = False) -> ts.Context:  # fmt: skip
    """A TenSEAL CKKS context with OS-random keys (TenSEAL has no seeded key generation)."""
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree, coeff_mod_bit_sizes=coeff_mod_bit_sizes,
                     n_threads=threads)  # fmt: skip
    ctx.global_scale = scale
    if galois:
        ctx.generate_galois_keys()
    return ctx


def encrypt(ctx: ts.Context, values: np.ndarray) -> ts.CKKSVector:
    """TenSEAL's ckks_vector of `values` (it splits long vectors over several ciphertexts itself)."""
    return ts.ckks_vector(ctx, np.asarray(values, dtype=np.float64).tolist())


def serialized_bytes(vec: ts.CKKSVector) -> int:
    return len(vec.serialize())


def matvec(vec: ts.CKKSVector, w: np.ndarray) -> Callable[[], ts.CKKSVector]:
    """A callable computing W·x with TenSEAL's vector-matrix product (`mm` takes Wᵀ)."""
    wt = np.asarray(w, dtype=np.float64).T.tolist()
    return lambda: vec.mm(wt)


def decrypt(vec: ts.CKKSVector) -> np.ndarray:
    return np.asarray(vec.decrypt(), dtype=np.float64)
