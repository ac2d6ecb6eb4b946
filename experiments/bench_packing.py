"""Benchmark: encryption throughput (values/s) and bytes of `encryptors.packing` against TenSEAL's ``ckks_vector`` on
the same vectors and parameters (NVFlare's: N=8192, [60, 40, 40], scale 2**40), one process.

Run from the repository root: python -m experiments.bench_packing [--lengths 85036 15226] [--repeats 5]
85036 is the DLG LeNet's parameter count on 3×32×32 inputs with 100 classes (CIFAR-100), 15226 on 1×32×32 with 10.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from encryptors import tenseal_reference as ref
from encryptors.packing import GradientPacker
from he_leak.bench.timing import median_seconds
from he_leak.seeds import KeySeed

BENCH_KEY = KeySeed.from_hex("be" * 32)  # a fixed test secret: the same keys every run (timings only)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[85036, 15226])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4, help="packed vectors the server adds")
    parser.add_argument("--threads", type=int, default=2, help="TenSEAL's n_threads for the second comparison")
    args = parser.parse_args()
    start = time.perf_counter()
    packer = GradientPacker(key_seed=BENCH_KEY)
    print(f"packing keygen {time.perf_counter() - start:.2f} s; {packer.describe()}")
    contexts = {}
    for threads in (1, args.threads):  # TenSEAL encrypts the chunks of one vector on n_threads C++ threads
        contexts[threads] = ref.ckks_context(poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 40], scale=2.0**40,
                                             threads=threads)  # fmt: skip
    server = packer.server()
    rng = np.random.default_rng(0)
    for length in args.lengths:
        x = rng.normal(scale=0.01, size=length)
        ours = median_seconds(lambda x=x: packer.encrypt(x), args.repeats)
        theirs = {t: median_seconds(lambda x=x, c=c: ref.encrypt(c, x), args.repeats)
                  for t, c in contexts.items()}  # fmt: skip
        packed = packer.encrypt(x)
        their_bytes = ref.serialized_bytes(ref.encrypt(contexts[1], x))
        sent = [packer.encrypt(x) for _ in range(args.clients)]
        summing = median_seconds(lambda sent=sent: server.sum(sent), args.repeats)
        error = np.abs(packer.decrypt(server.sum(sent)) - args.clients * x).max()
        tenseal = ", ".join(f"{length / s:.0f} values/s on {t} thread(s)" for t, s in theirs.items())
        print(
            f"n={length} ({len(packed.ciphertexts)} ciphertexts): packing {length / ours:.0f} values/s "
            f"({ours * 1e3:.0f} ms), tenseal {tenseal}; bytes {packed.nbytes} vs tenseal {their_bytes}; "
            f"server sum of {args.clients}: {summing * 1e3:.0f} ms, error {error:.1e}"
        )


if __name__ == "__main__":
    main()
