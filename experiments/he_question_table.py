"""The ckks-input table of the README from a results folder of experiments/he_question.toml: per (encryption,
dataset), over the analytic runs (each recovers the exact view, so the keyless question is asked of it), the
keyless attacker's gain over its label-aware prior — per learner (median) and for the learner it picks by its own
leave-one-out error (mean with a 95% bootstrap interval) —, the same estimate against the label-blind dataset mean
(median),
the keyless attacker's recovered count (Clopper–Pearson 95%), the key holder's PSNR (median) and the utility.

    python experiments/he_question_table.py experiments/measured/he_question
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from he_leak.report.stats import mean_interval, recovery_interval
from he_leak.sweep.store import read_results
from he_leak.text import fixed, median_of

ENCRYPTORS = ("ckks", "bfv", "permute", "linear-mask", "plain")


def cell(rows: list[dict]) -> str:
    """One table row's cells after the encryption and dataset names."""
    scored = [r for r in rows if r.get("plaintext_psnr") is not None and r.get("prior_psnr") is not None]
    gains = [r["plaintext_psnr"] - r["prior_psnr"] for r in scored]
    learners = sorted({name for r in scored for name in (r.get("keyless_psnrs") or {})})
    per_learner = " / ".join(
        f"{name} {fixed(median_of(r['keyless_psnrs'][name] - r['prior_psnr'] for r in scored), 2, sign=True)}"
        for name in learners
    )
    ci = mean_interval(gains)
    interval = "—" if ci is None else f"[{fixed(ci[0], 2, sign=True)}, {fixed(ci[1], 2, sign=True)}]"
    over_mean = median_of(r["plaintext_psnr"] - r["mean_psnr"] for r in scored if r.get("mean_psnr") is not None)
    k, n = sum(int(r.get("keyless_recovered") or 0) for r in scored), len(scored)
    low, high = recovery_interval(k, n)
    utility = median_of(r.get("utility") for r in rows)
    mean = sum(gains) / len(gains) if gains else None
    return (f"{n} | {per_learner or '—'} | {fixed(mean, 2, sign=True)} {interval} | "
            f"{fixed(over_mean, 2, sign=True)} | {k}/{n} ({low:.2f}–{high:.2f}) | "
            f"{fixed(median_of(r.get('key_plaintext_psnr') for r in rows), 1)} | {fixed(utility, 3)}")


def table(rows: list[dict]) -> str:
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        if row.get("scenario") == "ckks-input" and row.get("attack") == "analytic":
            cells[(row.get("encryptor") or "plain", row.get("data"))].append(row)
    lines = [
        "| encryption | data | images | keyless gain per learner, median (dB) | keyless gain of the attacker's pick: "
        "mean [95% CI] (dB) | over the dataset mean, median (dB) | keyless recovered (95% CI) | key holder PSNR (dB) "
        "| utility |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = {name: i for i, name in enumerate(ENCRYPTORS)}
    for (encryptor, data), group in sorted(cells.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1])):
        lines.append(f"| {encryptor} | {data} | {cell(group)} |")
    return "\n".join(lines)


def main(folder: str) -> None:
    print(table(read_results(Path(folder) / "results.jsonl")))  # the store's reader: result rows only


if __name__ == "__main__":
    main(sys.argv[1])
