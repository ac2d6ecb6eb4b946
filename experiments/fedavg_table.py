"""The FedAvg table from a results.jsonl of experiments/fedavg.toml: per view (who sees the update), model/data,
attack and its step budget, batch B, local batch b and local steps E — how many of the attacked samples the
unrolled multi-step attack and the single-gradient attack (`--no-unroll`, the update matched as one gradient)
recover (PSNR ≥ the run's success threshold; 95% Clopper–Pearson interval, scipy.stats.binomtest), their median
per-sample PSNR, and the mean per-sample PSNR difference of unrolling on the same samples (paired by data, index,
seed and position; the project's 95% BCa bootstrap, he_leak.report.stats).

E = 1 with b = B is one gradient: the two attacks are the same there and only the unrolled one runs ("—"). A sample
an attack failed on (it returned nothing) counts as not recovered and has no PSNR; a pair with a failure on either
side is left out of the difference. A view with nothing in the clear (the he-aggregate server: visible_fraction 0 in
every run) reads "nothing in the clear".

Run from the repository root (several results files make one table):
python experiments/fedavg_table.py experiments/measured/fedavg/results.jsonl \
    experiments/measured/fedavg_budget/results.jsonl
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from he_leak.attacks import ATTACKS
from he_leak.records import KEYLESS
from he_leak.report.stats import align, difference_interval, recovery_interval, sample_count, sample_keys, sample_psnrs
from he_leak.sweep.store import read_results


def view(row: dict) -> str:
    """Who sees the update, in words."""
    c = row["config"]
    if row["scenario"] == "plain":
        return "plain: the server"
    who = "a key-holding client" if c.get("role") == "client" else "the server"
    return f"{row['scenario']}, K = {c.get('clients')}: {who}"


def cell_key(row: dict) -> tuple:
    c = row["config"]
    local_batch = c.get("local_batch") or row["batch"]
    steps = c.get("iterations") or ATTACKS[row["attack"]].default_iterations
    hidden = c.get("hidden") if row["model"] == "mlp" else None
    model = f"{row['model']} {'-'.join(map(str, hidden))}" if hidden else row["model"]
    return (view(row), f"{model} / {row['data']}", row["attack"], steps, row["batch"], local_batch,
            c.get("local_steps") or 1)  # fmt: skip


def summary(rows: list[dict]) -> dict:
    """Samples recovered out of scored, its CP interval, the median per-sample PSNR (None: nothing in the clear)."""
    k = sum(int(r.get("recovered") or 0) for r in rows)
    n = sum(sample_count(r) for r in rows)
    psnrs = [v for r in rows for v in (sample_psnrs(r, KEYLESS) or []) if v is not None]
    blind = all(r.get("visible_fraction") == 0 for r in rows)  # every entry encrypted: no attack had anything
    return {"k": k, "n": n, "ci": recovery_interval(k, n), "median": float(np.median(psnrs)) if psnrs else None,
            "blind": blind, "runs": len(rows)}  # fmt: skip


def _fmt_rate(s: dict | None) -> str:
    if s is None:
        return "—"
    if s["blind"]:
        return f"nothing in the clear ({s['runs']} runs)"
    lo, hi = s["ci"]
    return f"{s['k']} / {s['n']} [{lo:.2f}, {hi:.2f}]"


def _fmt_db(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"


def keyed_psnrs(row: dict) -> list[tuple[tuple, float]]:
    """(sample key, PSNR of the attacker's estimate) per sample it has one for."""
    values, keys = sample_psnrs(row, KEYLESS), sample_keys(row)
    if values is None or len(values) != len(keys):
        return []
    return [(k, v) for k, v in zip(keys, values, strict=True) if v is not None]


def difference(unrolled: list[dict], single: list[dict]) -> str:
    """Mean per-sample PSNR of unrolled minus single gradient on the same samples, with its 95% interval. PSNRs, not
    gains over the prior: the prior follows each attack's own labels, so the two sides' priors may differ."""
    a = [kv for r in unrolled for kv in keyed_psnrs(r)]
    b = [kv for r in single for kv in keyed_psnrs(r)]
    common = {k for k, _ in a} & {k for k, _ in b}
    x, y, paired = align([kv for kv in a if kv[0] in common], [kv for kv in b if kv[0] in common])
    if not paired:
        return "— (a sample twice in the cell: not paired)"
    if len(x) < 2:
        return "—"
    lo, hi = difference_interval(x, y, paired=True) or (float("nan"), float("nan"))
    return f"{np.mean(np.subtract(x, y)):+.1f} [{lo:+.1f}, {hi:+.1f}] (n = {len(x)})"


def attack_label(key: tuple, rows: list[dict]) -> str:
    """The attack and its step budget, with how many label assignments ig ran where it tried several."""
    orders = max((r.get("label_orders") or 1 for r in rows), default=1)
    return f"{key[2]} ≤ {key[3]}" + (f" per label order (up to {orders})" if orders > 1 else "")


def table(rows: list[dict]) -> str:
    cells: dict[tuple, dict[bool, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        cells[cell_key(r)][bool(r["config"].get("unroll", True))].append(r)
    lines = ["| who sees the update | model / data | attack ≤ steps | B | b | E | unrolled: recovered [95% CI] | "
             "median dB | single gradient: recovered [95% CI] | median dB | unrolled − single: mean dB [95% CI] |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for key in sorted(cells):
        split = cells[key]
        u = summary(split[True]) if split[True] else None
        s = summary(split[False]) if split[False] else None
        diff = difference(split[True], split[False]) if u and s else "—"
        shown = (*key[:2], attack_label(key, split[True] + split[False]), *key[4:])
        lines.append(f"| {' | '.join(str(v) for v in shown)} | {_fmt_rate(u)} | {_fmt_db(u and u['median'])} | "
                     f"{_fmt_rate(s)} | {_fmt_db(s and s['median'])} | {diff} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="results.jsonl of experiments/fedavg.toml (and "
                        "fedavg_budget.toml)")  # fmt: skip
    args = parser.parse_args()
    print(table([row for path in args.results for row in read_results(path)]), end="")


if __name__ == "__main__":
    main()
