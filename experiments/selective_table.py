"""The selective-encryption verdict table from a results.jsonl of experiments/selective.toml: per model, selection
rule, attack and encrypted fraction p, how many of the n attacked images the server recovers (PSNR ≥ the run's
success threshold), the Clopper–Pearson 95% upper bound of that rate (scipy.stats.binomtest), and the per-image gain
of the server's estimate over its prior (median with a 95% bootstrap interval, and the worst case); then, per rule
and attack, the smallest p that stops it.

"Stops" at p: every image's attack ran, none was recovered, and the worst image's gain over the prior is ≤ STOP_GAIN
dB. The smallest p that stops an attack is the smallest p of the grid from which every larger p also stops it (so a
lucky p between two failures does not count). Rows at p = 0 (nothing encrypted) belong to every rule. An attack that
could not run (refused, or a label it needs is encrypted) is listed as such, never counted as stopped.

Run from the repository root: python -m experiments.selective_table results/selective/results.jsonl > OUT.md
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import binomtest, bootstrap

STOP_GAIN = 1.0  # dB over the prior: "within 1 dB of the prior" (the README's "stops")


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def cells(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Rows by (model, rule, attack, p); a p = 0 row is filed under every rule present."""
    rules = sorted({r["config"]["select"] for r in rows if r["config"]["encrypt_fraction"] > 0})
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        c = r["config"]
        p = c["encrypt_fraction"]
        for rule in rules if p == 0 else [c["select"]]:
            out[(r["model"], rule, r["attack"], p)].append(r)
    return out


def summarise(rows: list[dict]) -> dict:
    """n, recovered, could-not-run count and reason, CP upper bound, gain median (95% bootstrap) and max."""
    ran = [r for r in rows if r.get("plaintext_psnr") is not None]
    recovered = sum(1 for r in ran if (r.get("recovered") or 0) > 0)
    gains = np.array([r["keyless_gain"] for r in ran if r.get("keyless_gain") is not None])
    errors = sorted({(r.get("error") or "").split(":")[-1].strip()[:70] for r in rows if r not in ran})
    out = {"n": len(rows), "ran": len(ran), "recovered": recovered, "errors": errors,
           "cp_high": binomtest(recovered, len(ran)).proportion_ci(0.95, method="exact").high if ran else None}
    if len(gains):
        out["median"], out["max"] = float(np.median(gains)), float(gains.max())
        lo_hi = (None, None)
        if len(gains) > 2 and np.ptp(gains) > 0:
            ci = bootstrap((gains,), np.median, confidence_level=0.95, random_state=0, method="percentile")
            lo_hi = (float(ci.confidence_interval.low), float(ci.confidence_interval.high))
        out["median_ci"] = lo_hi
    out["stops"] = bool(ran) and len(ran) == len(rows) and recovered == 0 and out["max"] <= STOP_GAIN
    return out


def smallest_stopping(ps: list[float], summary: dict[float, dict]) -> float | None:
    """The smallest p from which every larger p of the grid stops the attack (None: not even the largest)."""
    found = None
    for p in sorted(ps, reverse=True):
        if not summary[p]["stops"]:
            break
        found = p
    return found


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "—" if v is None else format(v, spec)


def table(rows: list[dict]) -> str:
    by_cell = cells(rows)
    lines = ["| model | rule | attack | p | recovered / ran (n) | CP 95% upper | gain: median [95% CI] | gain: max | "
             "stops | could not run |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    verdict: dict[tuple, tuple] = {}
    for key in sorted({k[:3] for k in by_cell}):
        ps = sorted(p for (m, rule, a, p) in by_cell if (m, rule, a) == key)
        summary = {p: summarise(by_cell[(*key, p)]) for p in ps}
        for p in ps:
            s = summary[p]
            ci = s.get("median_ci", (None, None))
            lines.append(
                f"| {key[0]} | {key[1]} | {key[2]} | {p:g} | {s['recovered']} / {s['ran']} ({s['n']}) | "
                f"{_fmt(s['cp_high'], '.3f')} | {_fmt(s.get('median'))} [{_fmt(ci[0])}, {_fmt(ci[1])}] | "
                f"{_fmt(s.get('max'))} | {'yes' if s['stops'] else 'no'} | {'; '.join(e for e in s['errors'] if e)} |"
            )
        verdict[key] = (smallest_stopping(ps, summary), summary)
    return "\n".join(lines) + "\n\n" + smallest(verdict)


def smallest(verdict: dict[tuple, tuple]) -> str:
    """Per model and rule: the smallest p that stops each attack, with its bounds there."""
    lines = [f"Smallest p that stops each attack (stops: all ran, 0 recovered, worst gain ≤ {STOP_GAIN:g} dB, and "
             "every larger p of the grid too); at that p: recovered / ran, Clopper–Pearson 95% upper bound of the "
             "recovery rate, worst gain over the prior.", "",
             "| model | rule | attack | smallest p that stops it | recovered / ran | CP 95% upper | worst gain (dB) |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for (model, rule, attack), (p, summary) in sorted(verdict.items()):
        if p is None:
            runs = [s for s in summary.values() if s["ran"]]
            why = "never (not at the largest p)" if runs else "could not run at any p"
            lines.append(f"| {model} | {rule} | {attack} | {why} | — | — | — |")
            continue
        s = summary[p]
        lines.append(f"| {model} | {rule} | {attack} | {p:g} | {s['recovered']} / {s['ran']} | "
                     f"{_fmt(s['cp_high'], '.3f')} | {_fmt(s.get('max'))} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="results.jsonl of experiments/selective.toml")
    args = parser.parse_args()
    print(table(load(args.results)), end="")


if __name__ == "__main__":
    main()
