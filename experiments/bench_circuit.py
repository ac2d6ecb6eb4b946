"""Benchmark: plaintext-matrix × encrypted-vector products, `encryptors.circuit` (SEAL, seeded, BSGS) against
TenSEAL's ``CKKSVector.mm`` on the same sizes and parameters (N=8192, [60, 40, 40, 60], scale 2**40), one process.

Run from the repository root: python -m experiments.bench_circuit [--sizes 64x16 784x32] [--repeats 5]
Prints the median seconds per product and whether two identical products give identical ciphertext bytes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from encryptors import tenseal_reference as ref
from encryptors.circuit import CkksCircuit, plan_circuit
from he_leak.bench.timing import median_seconds
from he_leak.seeds import KeySeed

BENCH_KEY = KeySeed.from_hex("be" * 32)  # a fixed test secret: the same keys every run (timings only)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["64x16", "784x32"], help="input x output sizes")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    ctx = ref.ckks_context(poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 40, 60], scale=2.0**40, galois=True)
    rng = np.random.default_rng(0)
    for size in args.sizes:
        d, h = (int(v) for v in size.split("x"))
        x, w = rng.random(d), rng.normal(size=(h, d)) / d**0.5
        period = 1 << (d - 1).bit_length()
        start = time.perf_counter()
        holder = CkksCircuit(plan_circuit(depth=2, slots=period), key_seed=BENCH_KEY, periods=(period,))
        keygen = time.perf_counter() - start
        ev = holder.evaluator(seed=2)
        cx = holder.encrypt(x)
        vec = ref.encrypt(ctx, x)
        theirs_mm = ref.matvec(vec, w)
        ours = median_seconds(lambda ev=ev, cx=cx, w=w: ev.matvec(w, cx), args.repeats)
        theirs = median_seconds(theirs_mm, args.repeats)
        same_ours = holder.context.save(ev.matvec(w, cx).ciphertexts[0]) == holder.context.save(
            ev.matvec(w, cx).ciphertexts[0]
        )
        same_theirs = theirs_mm().serialize() == theirs_mm().serialize()
        err_ours = np.abs(holder.decrypt(ev.matvec(w, cx)) - w @ x).max()
        err_theirs = np.abs(ref.decrypt(theirs_mm()) - w @ x).max()
        print(
            f"{d:4d}x{h:<3d} seal-circuit {ours * 1e3:8.1f} ms (keygen {keygen:.1f} s, err {err_ours:.1e}, "
            f"reproducible {same_ours})   tenseal mm {theirs * 1e3:8.1f} ms (err {err_theirs:.1e}, "
            f"reproducible {same_theirs})   ratio {ours / theirs:.2f}"
        )


if __name__ == "__main__":
    main()
