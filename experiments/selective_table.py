"""The selective-encryption verdict table from a results.jsonl of experiments/selective.toml: per model, selection
rule, attack and encrypted fraction p, how many of the n attacked images the server recovers (PSNR ≥ the run's
success threshold), the Clopper–Pearson 95% upper bound of that rate (scipy.stats.binomtest), and the per-image gain
of the server's estimate over its prior (mean with the project's 95% BCa bootstrap interval, and the worst image);
then the same for the server's best attack per image; then the smallest p that stops each attack and all.

The rule is the verdict tables' (he_leak.report.protection): "no gain" at p means no image recovered and the upper end
of the mean gain's 95% interval ≤ STOP_MARGIN_DB; "stops" also needs the recovery rate's Clopper–Pearson upper bound
below RECOVERY_LEVEL — which 0 of 20 images (bound 0.168) does not give, so a 20-image cell with no gain reads "no
gain (n too small)" rather than "stops". The smallest p with no gain is the smallest p of the grid from which every
larger p also shows none (a lucky p between two failures does not count). Rows at p = 0 (nothing encrypted) belong
to every rule.
An attack that could not run on an image (refused: a convolution first; or the label it needs is encrypted) is
counted as such, never as stopped: an attack stops only on the images it ran on, and one that ran on none is
"could not run". For the server's best per image, an image no attack ran on leaves the server its prior (gain 0).

Run from the repository root: python experiments/selective_table.py results/selective/results.jsonl > OUT.md
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from he_leak.report.protection import RECOVERY_LEVEL, STOP_MARGIN_DB
from he_leak.report.stats import mean_interval, recovery_interval
from he_leak.sweep.store import read_results


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
    """n, recovered, could-not-run count and reasons, CP upper bound, mean gain (95% bootstrap) and worst."""
    ran = [r for r in rows if r.get("plaintext_psnr") is not None]
    errors = sorted({(r.get("error") or "").split(":")[-1].strip()[:60] for r in rows if r not in ran})
    out = stats([(r.get("recovered") or 0) > 0 for r in ran], [r["keyless_gain"] for r in ran])
    return {**out, "n": len(rows), "errors": [e for e in errors if e]}


def stats(recovered: list[bool], gains: list[float]) -> dict:
    """recovered count, ran, CP 95% upper bound, mean gain with its 95% interval, worst; no gain; stops."""
    k, n = sum(recovered), len(recovered)
    g = np.asarray(gains, dtype=float)
    out: dict = {"ran": n, "recovered": k, "cp_high": recovery_interval(k, n)[1] if n else None,
                 "mean": float(g.mean()) if len(g) else None, "max": float(g.max()) if len(g) else None,
                 "mean_ci": mean_interval(list(g)) or (None, None)}  # fmt: skip
    high = out["mean_ci"][1]
    out["no_gain"] = bool(n) and k == 0 and high is not None and high <= STOP_MARGIN_DB
    out["stops"] = out["no_gain"] and out["cp_high"] < RECOVERY_LEVEL
    return out


def best_per_image(rows: list[dict]) -> dict:
    """The server's best attack per image: recovered by any, gain the largest of those that ran (0: none ran)."""
    by_image: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        by_image[r["index"]].append(r)
    recovered, gains = [], []
    for image_rows in by_image.values():
        ran = [r for r in image_rows if r.get("plaintext_psnr") is not None]
        recovered.append(any((r.get("recovered") or 0) > 0 for r in ran))
        gains.append(max((r["keyless_gain"] for r in ran), default=0.0))
    return {**stats(recovered, gains), "n": len(by_image), "errors": []}


def smallest_stopping(ps: list[float], summary: dict[float, dict]) -> float | None:
    """The smallest p from which every larger p of the grid shows no gain (None: not even the largest). A p where the
    attack could run on no image (it failed on every one: the server keeps its prior) counts as no gain, as in the
    verdict tables, once the attack ran at some p."""
    if not any(summary[p]["ran"] for p in ps):
        return None
    found = None
    for p in sorted(ps, reverse=True):
        if not (summary[p]["no_gain"] or summary[p]["ran"] == 0):
            break
        found = p
    return found


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "—" if v is None else format(v, spec)


def _verdict(s: dict) -> str:
    return "stops" if s["stops"] else "no gain (n too small)" if s["no_gain"] else "no"


def _row(key: tuple, p: float, s: dict) -> str:
    lo, hi = s["mean_ci"]
    return (f"| {key[0]} | {key[1]} | {key[2]} | {p:g} | {s['recovered']} / {s['ran']} ({s['n']}) | "
            f"{_fmt(s['cp_high'], '.3f')} | {_fmt(s['mean'])} [{_fmt(lo)}, {_fmt(hi)}] | {_fmt(s['max'])} | "
            f"{_verdict(s)} | {'; '.join(s['errors'])} |")  # fmt: skip


def table(rows: list[dict]) -> str:
    by_cell = cells(rows)
    for (model, rule, _, p), cell in list(by_cell.items()):  # the server's best attack, per image
        by_cell.setdefault((model, rule, "best of all", p), []).extend(cell)
    lines = ["| model | rule | attack | p | recovered / ran (n) | CP 95% upper | gain: mean [95% CI] | gain: worst | "
             "verdict | could not run |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    verdict: dict[tuple, tuple] = {}
    for key in sorted({k[:3] for k in by_cell}):
        ps = sorted(p for (m, rule, a, p) in by_cell if (m, rule, a) == key)
        pick = best_per_image if key[2] == "best of all" else summarise
        summary = {p: pick(by_cell[(*key, p)]) for p in ps}
        lines += [_row(key, p, summary[p]) for p in ps]
        verdict[key] = (smallest_stopping(ps, summary), summary)
    return "\n".join(lines) + "\n\n" + smallest(verdict)


def smallest(verdict: dict[tuple, tuple]) -> str:
    """Per model and rule: the smallest p that stops each attack, with its bounds there."""
    lines = [f"Smallest p with no gain (0 recovered, mean gain's 95% upper bound ≤ {STOP_MARGIN_DB:g} dB, at that p "
             "and every larger p of the grid); at that p: recovered / ran, Clopper–Pearson 95% upper bound of the "
             f"recovery rate (\"stops\" in the verdict tables also needs it below {RECOVERY_LEVEL:g}), mean gain "
             "[95% CI] and worst gain over the prior (dB).", "",
             "| model | rule | attack | smallest p with no gain | recovered / ran | CP 95% upper | gain: mean "
             "[95% CI] | gain: worst |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (model, rule, attack), (p, summary) in sorted(verdict.items()):
        if p is None:
            runs = [s for s in summary.values() if s["ran"]]
            why = ("could not run at any p" if not runs else f"never (not at p = {max(summary):g}, the largest it ran "
                   "at)")  # fmt: skip
            lines.append(f"| {model} | {rule} | {attack} | {why} | — | — | — | — |")
            continue
        s = summary[p]
        lo, hi = s["mean_ci"]
        if not s["ran"]:
            lines.append(f"| {model} | {rule} | {attack} | {p:g} (failed on all {s['n']}: the prior) | — | — | — | — |")
            continue
        lines.append(f"| {model} | {rule} | {attack} | {p:g} | {s['recovered']} / {s['ran']} | "
                     f"{_fmt(s['cp_high'], '.3f')} | {_fmt(s['mean'])} [{_fmt(lo)}, {_fmt(hi)}] | "
                     f"{_fmt(s['max'])} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def own_data(rows: list[dict]) -> str:
    """Sensitivity rule: does it matter whether the attacked image is among client 0's own map samples? The mean
    gain of the server's best attack per image, split by `he_params.attacked_in_own_data`."""
    lines = ["Sensitivity rule, the server's best attack per image, split by whether the attacked image is among the "
             "samples client 0's map was computed on (the draw is independent of the attacked index): mean gain "
             "(dB) and images.", "", "| model | p | in client 0's samples | not in them |", "|---|---|---|---|"]
    groups: dict[tuple, dict[bool, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        inside = (r.get("he_params") or {}).get("attacked_in_own_data")
        if r["config"]["select"] == "sensitivity" and inside is not None:
            groups[(r["model"], r["config"]["encrypt_fraction"])][inside > 0].append(r)
    for (model, p), split in sorted(groups.items()):
        cells_ = []
        for inside in (True, False):
            s = best_per_image(split[inside]) if split[inside] else None
            cells_.append("—" if s is None else f"{_fmt(s['mean'])} ({s['n']} images)")
        lines.append(f"| {model} | {p:g} | {cells_[0]} | {cells_[1]} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="results.jsonl of experiments/selective.toml")
    parser.add_argument("--smallest", action="store_true", help="only the smallest-p table (the README's)")
    args = parser.parse_args()
    rows = read_results(args.results)  # the store's reader: result rows only
    full = table(rows)
    if args.smallest:
        print(full[full.index("Smallest p"):], end="")
    else:
        print(full + "\n" + own_data(rows), end="")


if __name__ == "__main__":
    main()
