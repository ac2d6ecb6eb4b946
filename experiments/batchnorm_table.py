"""The BatchNorm table from a results.jsonl of experiments/batchnorm.toml: per model, data and BN-prior weight, how
many of the attacked images ig recovers (95% Clopper–Pearson interval), their median PSNR, the mean per-image gain
over the label-aware prior (95% BCa bootstrap), and the paired PSNR difference of the prior's weight against no
prior on the same images (by data, index, seed and position).

Run from the repository root: python experiments/batchnorm_table.py experiments/measured/batchnorm/results.jsonl
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from he_leak.records import KEYLESS
from he_leak.report.stats import (
    align,
    difference_interval,
    mean_interval,
    recovery_interval,
    sample_count,
    sample_gains,
    sample_keys,
    sample_psnrs,
)
from he_leak.sweep.store import read_results


def keyed_psnrs(row: dict) -> list[tuple[tuple, float]]:
    values, keys = sample_psnrs(row, KEYLESS), sample_keys(row)
    if values is None or len(values) != len(keys):
        return []
    return [(k, v) for k, v in zip(keys, values, strict=True) if v is not None]


def _interval(pair: tuple[float, float] | None) -> str:
    return "—" if pair is None else f"[{pair[0]:+.1f}, {pair[1]:+.1f}]"


def line(model: str, data: str, weight: float, rows: list[dict], base: list[dict]) -> str:
    k = sum(int(r.get("recovered") or 0) for r in rows)
    n = sum(sample_count(r) for r in rows)
    lo, hi = recovery_interval(k, n)
    psnrs = [v for r in rows for _, v in keyed_psnrs(r)]
    gains = [g for r in rows for g in sample_gains(r, KEYLESS)]
    diff = "—"
    if weight and base:
        x, y, paired = align([kv for r in rows for kv in keyed_psnrs(r)], [kv for r in base for kv in keyed_psnrs(r)])
        if paired and len(x) > 1:
            diff = f"{np.mean(np.subtract(x, y)):+.1f} {_interval(difference_interval(x, y, paired=True))}"
    median = f"{np.median(psnrs):.1f}" if psnrs else "—"
    gain = f"{np.mean(gains):+.1f} {_interval(mean_interval(gains))}" if gains else "—"
    return f"| {model} | {data} | {weight:g} | {k} / {n} [{lo:.2f}, {hi:.2f}] | {median} | {gain} | {diff} |"


def table(rows: list[dict]) -> str:
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        cells[(r["model"], r["data"], float(r["config"].get("bn_prior") or 0.0))].append(r)
    lines = ["| model | data | BN prior | recovered [95% CI] | median dB | gain over prior: mean [95% CI] dB | "
             "PSNR vs no prior, paired: mean [95% CI] dB |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for model, data, weight in sorted(cells):
        base = cells.get((model, data, 0.0), [])
        lines.append(line(model, data, weight, cells[(model, data, weight)], base))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="results.jsonl of experiments/batchnorm.toml")
    print(table(read_results(parser.parse_args().results)), end="")


if __name__ == "__main__":
    main()
