"""Benchmark: ciphertext view extraction / reassembly vs serialising / loading the same vectors.

Run from the repository root: python -m experiments.bench_views [--n 64 625 3072] [--repeats 30]
"""

from __future__ import annotations

import argparse

import numpy as np

from encryptors import make_encryptor
from he_leak.bench.timing import median_seconds
from he_leak.seeds import KeySeed

BENCH_KEY = KeySeed.from_hex("be" * 32)  # a fixed test secret: the same keys every run (timings only)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[64, 625, 3072])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    for name in ("ckks", "bfv"):
        for n in args.n:
            enc = make_encryptor(name, n=n, key_seed=BENCH_KEY)
            handle = enc.public(seed=1)
            hidden = enc.encrypt(np.random.default_rng(0).random(n))
            v = handle.view(hidden)
            blobs = [vec.serialize() for vec in hidden]
            ser = median_seconds(lambda h=hidden: [vec.serialize() for vec in h], args.repeats)
            de = median_seconds(lambda b=blobs, e=handle: [e.load_vector(x) for x in b], args.repeats)
            view = median_seconds(lambda h=hidden, e=handle: e.view(h), args.repeats)
            unview = median_seconds(lambda v=v, e=handle: e.unview(v), args.repeats)
            print(
                f"{name:4s} n={n:5d} view_size={enc.view_size:7d}  view {view * 1e3:7.2f} ms vs serialize "
                f"{ser * 1e3:6.2f} ms ({view / ser:4.2f}x)   unview {unview * 1e3:7.2f} ms vs deserialize "
                f"{de * 1e3:6.2f} ms ({unview / de:4.2f}x)"
            )


if __name__ == "__main__":
    main()
