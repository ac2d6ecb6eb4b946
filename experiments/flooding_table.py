"""The flooding table from a results folder of experiments/flooding.toml: per flooding level B and attack, the number
of digits, the shared gradient's error, the attacker's PSNR (median with a 95% bootstrap interval, worst and best),
the recovery rate (Clopper–Pearson 95%) and the prior, plus the ciphertext noise and utility.

    python experiments/flooding_table.py experiments/measured/flooding > experiments/measured/flooding/table.md
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

from he_leak.sweep.store import read_results


def median_interval(values: list[float]) -> tuple[float, float]:
    if len(set(values)) == 1:
        return values[0], values[0]
    ci = stats.bootstrap((np.asarray(values),), np.median, confidence_level=0.95, random_state=0).confidence_interval
    return float(ci.low), float(ci.high)


def table(rows: list[dict]) -> str:
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        cells[(row["config"].get("flood_bits"), row["attack"])].append(row)
    lines = [
        "| flood bits B | attack | digits | he_gradient_error (median) | PSNR median [95% CI] | worst / best | "
        "recovered (≥ 30 dB) [95% CI] | prior | ciphertext noise (bits) | flood std per entry | utility |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (bits, attack), group in sorted(cells.items(), key=lambda kv: (kv[0][0] or 0, kv[0][1])):
        psnr = [r["plaintext_psnr"] for r in group]
        low, high = median_interval(psnr)
        k, n = sum(bool(r["success"]) for r in group), len(group)
        rate = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        params = [r["he_params"] for r in group]
        flood_std = params[0]["flood_std"]
        lines.append(
            f"| {bits if bits is not None else 'none (exact)'} | {attack} | {n} | "
            f"{np.median([r['he_gradient_error'] for r in group]):.2e} | {np.median(psnr):.1f} [{low:.1f}, {high:.1f}] "
            f"| {min(psnr):.1f} / {max(psnr):.1f} | {k}/{n} [{rate.low:.2f}, {rate.high:.2f}] | "
            f"{np.median([r['prior_psnr'] for r in group]):.1f} | "
            f"{np.median([p['decryption_noise_bits'] for p in params]):.1f} | "
            f"{'—' if flood_std is None else f'{flood_std:.2e}'} | {group[0]['utility']:.3f} |"
        )
    return "\n".join(lines)


def main(folder: str) -> None:
    print(table(read_results(Path(folder) / "results.jsonl")))  # the store's reader: result rows only


if __name__ == "__main__":
    main(sys.argv[1])
