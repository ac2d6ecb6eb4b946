"""Which protection stops which attacker: one verdict per (protection, attacker), computed from per-sample data.

A protection is the scenario with the settings that define it (encryptor, role and clients, encrypted fraction and
selection, defences). Its attackers are whoever sees that scenario's gradient; each is judged only by what it holds:
- ckks-input has two: the **keyless** attacker (its decoder's plaintext estimate; recovered = samples whose estimate
  reaches success_psnr, `keyless_recovered`) and a **key holder** (the decryption of the recovered ciphertext;
  recovered = the scenario's rule, exact and decryptable, `recovered`);
- he-aggregate: the `server` (no key), a key-holding `client` or the server's key-holding `colluder` (the label
  names K, B when not 1, a backend other than seal, and a malicious imprint layer); he-train: whoever sees the
  decrypted update, and with `--key-recovery` the server that recovers the key from the decryptions it is handed and
  decrypts the inputs (its estimate is the key holder's; recovered: `key_holder_recovered`; no key: "attack failed",
  it keeps its prior); plain and the gradient defences: whoever sees the gradient (their estimate and the scenario's
  `recovered`).

Per (protection, attacker) and attack (he_leak.report.stats for the intervals): n samples scored — a run that ended
without an estimate is counted as failed, never as a sample at its prior —, k recovered with the Clopper–Pearson
interval of k/n, the median and the worst case (largest) per-sample PSNR, and the per-sample gain over the attacker's
prior with a bootstrap interval of its mean. The **best attack** is the one that recovers the largest share of its
samples; ties (e.g. none recovers anything) go to the highest mean gain, then to the name, so the choice is stable.

The verdict, from the best attack:
- ``stops``: no sample recovered, the rate's upper bound below RECOVERY_LEVEL and the gain interval's upper end at
  most STOP_MARGIN_DB (an estimate worse than the prior is no gain: the attacker can always keep its prior);
- ``does not stop``: a sample recovered, or the whole gain interval above STOP_MARGIN_DB;
- ``inconclusive``: neither — too few samples for the rate bound, or a gain interval that straddles the margin;
- ``attack failed``: no attack produced an estimate; the attacker keeps its prior, which says nothing about the
  protection;
- ``nothing in the clear``: the attacker sees no gradient entry in the clear (`visible_fraction` 0): there is nothing
  to attack, reported as such rather than as a measured stop.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from he_leak.records import KEY_HOLDER, KEYLESS, PRIOR
from he_leak.report.stats import (
    CONFIDENCE,
    mean_interval,
    recovery_interval,
    sample_gains,
    sample_psnrs,
)
from he_leak.text import finite, fixed, median_of

STOP_MARGIN_DB = 1.0  # a gain over the prior up to this many dB is "nothing beyond the prior"
RECOVERY_LEVEL = 0.15  # "stops" needs the rate's upper confidence bound below this (0 of n: n >= 23 samples)
STOPS, NOT_STOPS, INCONCLUSIVE = "stops", "does not stop", "inconclusive"
FAILED, NOTHING = "attack failed", "nothing in the clear"
KEY_RECOVERY = "server, key from shared decryptions"  # he-train --key-recovery: reads the inputs with it
Row = Mapping[str, Any]


def protection(row: Row) -> str:
    """A readable name of the protection a row ran under."""
    cfg = row.get("config") or {}
    scenario = row.get("scenario")
    parts = [str(scenario)]
    if scenario == "ckks-input":
        parts.append(str(row.get("encryptor")))
    elif scenario == "he-train":
        model = " ".join(str(v) for v in (cfg.get("model"), cfg.get("activation")) if v)  # logreg has none
        parts.append(f"{model}, {cfg.get('loss') or 'mse'}")
        if cfg.get("key_recovery"):
            parts.append(f"shares {cfg.get('disclosure', 'entries')}")
        if cfg.get("flood_bits"):
            parts.append(f"flood 2^{cfg['flood_bits']}")
    elif scenario == "he-aggregate":
        parts.append(f"K={cfg.get('clients', 1)}")
        if cfg.get("batch", 1) != 1:
            parts.append(f"B={cfg['batch']}")
        if cfg.get("he_backend", "seal") != "seal":
            parts.append(str(cfg["he_backend"]))
        if cfg.get("imprint"):
            parts.append(f"imprint {cfg['imprint']} bins")
        if cfg.get("encrypt_layers"):
            parts.append(f"layers /{cfg['encrypt_layers']}/ encrypted")
        elif (p := cfg.get("encrypt_fraction", 1.0)) >= 1.0:
            parts.append("all encrypted")
        else:
            parts.append(f"p={p:g} {cfg.get('select', 'sensitivity')}")
    elif scenario == "secagg":
        parts.append(f"K={cfg.get('clients', 2)}")
    for name in ("clip", "prune", "noise"):
        value = cfg.get(name)
        if value:
            parts.append(f"{name} {value:g}")
    if cfg.get("dp_noise") is not None:
        parts.append(f"DP-SGD z={cfg['dp_noise']:g} C={cfg.get('dp_clip', 1.0):g}")
    return " · ".join(parts + federation(cfg))


def federation(cfg: Row) -> list[str]:
    """The client's training as a row ran it (local steps, train mode, training stage), with the model and data they
    describe (one experiment may train on several); nothing for one gradient of an untrained model in eval mode."""
    bits = []
    if cfg.get("local_steps"):
        b = cfg.get("local_batch") or cfg.get("batch", 1)
        bits.append(f"E={cfg['local_steps']} η={cfg.get('local_lr'):g} b={b}")
    if cfg.get("model_mode") == "train":
        bits.append("train mode")
    if cfg.get("pretrain_epochs"):
        bits.append(f"pretrained {cfg['pretrain_epochs']} epochs")
    return [str(cfg.get("model")), str(cfg.get("data"))] + bits if bits else []


def attack_label(row: Row) -> str:
    """The attack as the verdict names it: its name, `(single gradient)` when a local update is matched as one
    gradient (--no-unroll), `+ BN prior` with ig's BatchNorm prior."""
    cfg = row.get("config") or {}
    label = str(row.get("attack"))
    if cfg.get("unroll") is False:
        label += " (single gradient)"
    if cfg.get("bn_prior"):
        label += f" + BN prior {cfg['bn_prior']:g}"
    return label


def attackers(row: Row) -> dict[str, tuple[str, str]]:
    """Attacker → (its estimate in `sample_psnrs`, the Result field counting its recovered samples)."""
    scenario = row.get("scenario")
    if scenario == "ckks-input":
        return {"keyless": (KEYLESS, "keyless_recovered"), "key holder": (KEY_HOLDER, "recovered")}
    who = {"he-aggregate": str((row.get("config") or {}).get("role", "server")), "he-train": "sees the update",
           "secagg": "server (sees the sum)"}  # fmt: skip
    out = {who.get(str(scenario), "sees the gradient"): (KEYLESS, "recovered")}
    if scenario == "he-train" and (row.get("config") or {}).get("key_recovery"):
        out[KEY_RECOVERY] = (KEY_HOLDER, "key_holder_recovered")
    return out


@dataclass(frozen=True)
class AttackStats:
    """One attack's per-sample figures for one attacker (None where no sample was scored)."""

    attack: str
    runs: int
    failed: int  # runs without an estimate (an error before any)
    n: int  # samples scored
    k: int  # samples recovered
    rate_ci: tuple[float, float]
    psnr_median: float | None
    psnr_worst: float | None
    prior_median: float | None
    gain_mean: float | None
    gain_ci: tuple[float, float] | None
    error: str | None = None  # the first error of its runs

    @property
    def rank(self) -> tuple[float, float, str]:
        """Best first when sorted in reverse: recovery share, mean gain, then name (reverse-sorted, a stable tie)."""
        share = self.k / self.n if self.n else -1.0
        return share, self.gain_mean if self.gain_mean is not None else -math.inf, self.attack


@dataclass(frozen=True)
class Cell:
    """The verdict of one (protection, attacker) and the figures behind it; `attacks` best first."""

    protection: str
    attacker: str
    attacks: tuple[AttackStats, ...]
    verdict: str
    reason: str
    utility: float | None = None
    utility_plain: float | None = None
    utility_measured: str | None = None  # how the utility was measured, when the rows say so
    he_seconds: float | None = None
    he_bytes: float | None = None
    epsilon: float | None = None  # DP-SGD's ε at δ = 1e-5 (Result.dp_epsilon), where defined
    rows: tuple[Row, ...] = field(default=(), repr=False, compare=False)

    @property
    def best(self) -> AttackStats | None:
        return self.attacks[0] if self.attacks and self.attacks[0].n else None


def attack_stats(attack: str, runs: Sequence[Row], estimate: str, count: str) -> AttackStats:
    """Pool one attack's runs for one attacker (see the module docstring)."""
    psnrs: list[float] = []
    gains: list[float] = []
    priors = [p for r in runs for p in (sample_psnrs(r, PRIOR) or []) if p is not None]
    k = n = failed = 0
    for r in runs:
        values = sample_psnrs(r, estimate)
        if values is None or not finite(r.get(count)):
            failed += 1
            continue
        psnrs += [v for v in values if v is not None]
        gains += sample_gains(r, estimate)
        k, n = k + int(r[count]), n + len(values)
    error = next((str(r["error"]) for r in runs if r.get("error")), None)
    return AttackStats(
        attack=attack, runs=len(runs), failed=failed, n=n, k=k, rate_ci=recovery_interval(k, n),
        psnr_median=median_of(psnrs), psnr_worst=max(psnrs) if psnrs else None, prior_median=median_of(priors),
        gain_mean=statistics.fmean(gains) if gains else None, gain_ci=mean_interval(gains), error=error,
    )  # fmt: skip


def judge(attacks: Sequence[AttackStats], rows: Sequence[Row]) -> tuple[str, str]:
    """(verdict, why) for one (protection, attacker); `attacks` best first."""
    if rows and all(finite(r.get("visible_fraction")) and r["visible_fraction"] == 0 for r in rows):
        return NOTHING, "no gradient entry is visible, so there is nothing to attack: the attacker keeps its prior"
    best = attacks[0] if attacks and attacks[0].n else None
    if best is None:
        first = next((a.error for a in attacks if a.error), None)
        return FAILED, "attack failed — the attacker keeps its prior (no run produced an estimate" + (
            f"; first error: {first})" if first else ")")
    if best.k:
        return NOT_STOPS, f"{best.k}/{best.n} samples recovered ({best.attack})"
    gain, ci, high = best.gain_mean, best.gain_ci, best.rate_ci[1]
    if ci is not None and ci[0] > STOP_MARGIN_DB:
        return NOT_STOPS, f"{best.attack} gains {fixed(gain, sign=True)} dB over the prior, interval {_ci(ci)} " \
                          f"above +{STOP_MARGIN_DB:g} dB, though no sample reaches the recovery threshold"  # fmt: skip
    why = []
    if high >= RECOVERY_LEVEL:
        why.append(f"too few samples: 0/{best.n} recovered, but the rate's upper bound {high:.2f} is not below "
                   f"{RECOVERY_LEVEL:g}")  # fmt: skip
    if ci is None:
        why.append("too few samples for a gain interval")
    elif ci[1] > STOP_MARGIN_DB:
        why.append(f"the gain interval {_ci(ci)} straddles +{STOP_MARGIN_DB:g} dB")
    if why:
        return INCONCLUSIVE, "; ".join(why)
    worse = "; the estimates are worse than the prior, which the attacker can keep" if ci[1] < -STOP_MARGIN_DB else ""
    return STOPS, f"0/{best.n} recovered (rate at most {high:.2f}), mean gain {fixed(gain, sign=True)} dB, interval " \
                  f"{_ci(ci)} at most +{STOP_MARGIN_DB:g} dB{worse}"  # fmt: skip


def summarise(rows: Sequence[Row]) -> list[Cell]:
    """One Cell per (protection, attacker), in the order the rows first name them."""
    groups: dict[tuple[str, str], list[Row]] = {}
    everyone: dict[str, list[Row]] = {}  # what a protection costs does not depend on who attacks it
    for row in rows:
        everyone.setdefault(protection(row), []).append(row)
        for who in attackers(row):
            groups.setdefault((protection(row), who), []).append(row)
    cells = []
    for (name, who), group in groups.items():
        estimate, count = attackers(group[0])[who]
        by_attack: dict[str, list[Row]] = {}
        for row in group:
            by_attack.setdefault(attack_label(row), []).append(row)
        stats = sorted((attack_stats(a, rs, estimate, count) for a, rs in by_attack.items()),
                       key=lambda s: s.rank, reverse=True)  # fmt: skip
        verdict, reason = judge(stats, group)
        cost = everyone[name]
        measured = next((str(r["utility_measured"]) for r in cost if r.get("utility_measured")), None)
        cells.append(Cell(
            protection=name, attacker=who, attacks=tuple(stats), verdict=verdict, reason=reason,
            utility=median_of([r.get("utility") for r in cost]), utility_plain=median_of([r.get("utility_plain")
                                                                                      for r in cost]),
            utility_measured=measured, he_seconds=median_of([r.get("he_seconds") for r in cost]),
            he_bytes=median_of([r.get("he_bytes") for r in cost]), epsilon=median_of([r.get("dp_epsilon")
                                                                                    for r in cost]),
            rows=tuple(group),
        ))  # fmt: skip
    return cells


def _ci(ci: tuple[float, float] | None, digits: int = 1) -> str:
    return "—" if ci is None else f"[{fixed(ci[0], digits, sign=True)}, {fixed(ci[1], digits, sign=True)}]"


def _bytes(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1e6:.2f} MB" if value >= 1e5 else f"{value / 1e3:.1f} kB"


ci_text, bytes_text = _ci, _bytes  # for he_leak.report.frontier

COLUMNS = ("protection", "attacker", "verdict", "best attack", "recovered (95% CI)", "PSNR median / worst (dB)",
           "prior (dB)", "gain over prior: mean [95% CI] (dB)", "utility (plain)", "HE per round")  # fmt: skip


def row_cells(cell: Cell) -> list[str]:
    """The table cells of one (protection, attacker)."""
    best = cell.best
    utility = "—" if cell.utility is None else f"{cell.utility:.3f} (plain {fixed(cell.utility_plain, 3)})"
    if cell.utility is not None and cell.utility_measured:
        utility += f", {cell.utility_measured}"
    cost = "—" if cell.he_seconds is None else f"{cell.he_seconds:.2f} s, {_bytes(cell.he_bytes)}"
    if best is None:
        return [cell.protection, cell.attacker, cell.verdict, "—", "—", "—",
                fixed(median_of([a.prior_median for a in cell.attacks])), "—", utility, cost]  # fmt: skip
    low, high = best.rate_ci
    return [
        cell.protection, cell.attacker, cell.verdict, best.attack, f"{best.k}/{best.n} ({low:.2f}–{high:.2f})",
        f"{fixed(best.psnr_median)} / {fixed(best.psnr_worst)}", fixed(best.prior_median),
        f"{fixed(best.gain_mean, sign=True)} {_ci(best.gain_ci)}", utility, cost,
    ]  # fmt: skip


def legend() -> str:
    """What the table's words and numbers mean (printed under it, generated with it)."""
    level = f"{100 * CONFIDENCE:g}%"
    return (
        f"Per (protection, attacker); best attack: the largest share of samples recovered, then the highest mean gain. "
        f"**{STOPS}**: no sample recovered, the {level} Clopper–Pearson upper bound of the recovery rate below "
        f"{RECOVERY_LEVEL:g} and the {level} bootstrap interval of the mean per-sample gain over the prior at most "
        f"+{STOP_MARGIN_DB:g} dB; **{NOT_STOPS}**: a sample recovered or the whole interval above +{STOP_MARGIN_DB:g} "
        f"dB; **{INCONCLUSIVE}**: neither; **{FAILED}**: no attack produced an estimate (the attacker keeps its "
        f"prior); **{NOTHING}**: the attacker sees no gradient entry in the clear. Recovered: k/n samples (the "
        f"scenario's per-sample rule; for the keyless attacker its own estimate ≥ success_psnr). PSNR: median / worst "
        f"case (largest) over samples. Prior: the class mean of the label the gradient leaks (the dataset mean when "
        f"none leaks). Utility: test accuracy after the same training budget (he_leak.scoring.utility_accuracy)."
    )


def table(cells: Sequence[Cell]) -> list[str]:
    """Markdown lines of the protection table (empty when the cells hold a single protection)."""
    if len({c.protection for c in cells}) < 2:
        return []
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for cell in cells:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row_cells(cell)) + " |")
    return lines


COMPACT = ("protection", "attacker", "verdict", "best attack", "recovered (95% CI)",
           "gain over prior: mean [95% CI] (dB)")  # fmt: skip


def compact_table(cells: Sequence[Cell]) -> list[str]:
    """The table's verdict columns only (a CI step summary), for any number of protections."""
    keep = [COLUMNS.index(c) for c in COMPACT]
    lines = ["| " + " | ".join(COMPACT) + " |", "|" + "---|" * len(COMPACT)]
    for cell in cells:
        values = row_cells(cell)
        lines.append("| " + " | ".join(values[i].replace("|", "\\|") for i in keep) + " |")
    return lines if cells else []


def markdown(rows: Sequence[Row]) -> str:
    """The table and its legend, as `he-leak table` prints them (and the README holds them)."""
    lines = table(summarise(rows))
    return "\n".join([*lines, "", legend()]) + "\n" if lines else ""


def sentence(cell: Cell) -> str:
    """One verdict line for a (protection, attacker): the verdict and why, the best attack's figures, the others."""
    text = f"- **{cell.protection} — {cell.attacker}**: {cell.verdict}: {cell.reason}."
    if (best := cell.best) is not None:
        low, high = best.rate_ci
        text += (f" Best attack {best.attack} ({len(cell.attacks)} tried): {best.k}/{best.n} recovered ({low:.2f}–"
                 f"{high:.2f}), PSNR median {fixed(best.psnr_median)} dB, worst {fixed(best.psnr_worst)} dB, prior "
                 f"{fixed(best.prior_median)} dB, mean gain {fixed(best.gain_mean, sign=True)} dB {_ci(best.gain_ci)}.")
    others = [_other(a) for a in cell.attacks if a is not cell.best]
    return text + (f" {'Others' if cell.best else 'Attacks'}: " + "; ".join(others) + "." if others else "")


def _other(a: AttackStats) -> str:
    if not a.n:
        return f"{a.attack} produced no estimate in {a.runs} runs" + (f" ({a.error})" if a.error else "")
    failed = f", {a.failed} of {a.runs} runs failed" if a.failed else ""
    return f"{a.attack} {a.k}/{a.n}, median {fixed(a.psnr_median)} dB, gain {fixed(a.gain_mean, sign=True)} dB{failed}"


COLOURS = {STOPS: "tab:green", NOT_STOPS: "tab:red", INCONCLUSIVE: "tab:orange", FAILED: "tab:grey",
           NOTHING: "tab:blue"}  # fmt: skip


def figure(cells: Sequence[Cell], path: Path) -> Path | None:
    """Horizontal bars: each (protection, attacker)'s best mean gain over its prior (dB) with its 95% interval,
    coloured by verdict; cells without an estimate are named at 0. None when the cells hold a single protection."""
    if len({c.protection for c in cells}) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 0.32 * len(cells) + 1.5))
    for i, cell in enumerate(cells):
        best = cell.best
        colour = COLOURS[cell.verdict]
        if best is None or best.gain_mean is None:
            ax.text(0.5, i, cell.verdict, va="center", fontsize=6, color=colour)
            continue
        ci = best.gain_ci or (best.gain_mean, best.gain_mean)
        ax.barh(i, best.gain_mean, color=colour, xerr=[[best.gain_mean - ci[0]], [ci[1] - best.gain_mean]],
                error_kw={"elinewidth": 0.8, "capsize": 2})  # fmt: skip
        ax.text(max(best.gain_mean, ci[1], 0) + 1, i, f"{cell.verdict}; {best.k}/{best.n} recovered", va="center",
                fontsize=6)  # fmt: skip
    ax.axvline(STOP_MARGIN_DB, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(cells)), [f"{c.protection} — {c.attacker}" for c in cells], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"best attack's mean gain over the attacker's prior (dB), {100 * CONFIDENCE:g}% bootstrap interval")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
