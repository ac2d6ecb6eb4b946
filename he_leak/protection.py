"""Protection summary: which protection stops which attacker, at what cost — one table row per (protection,
attacker) with the best attack's PSNR against the attacker's label-aware prior, the model's utility under that
protection and the HE cost per round; a verdict sentence per row and a figure, all computed from result rows.

A protection is the scenario with the settings that define it (encryptor, role and clients, encrypted fraction and
selection, defences). The attackers of a row: whoever sees that scenario's gradient; for ckks-input two of them, the
keyless attacker (its decoder's estimate) and a key holder (the decryption of the recovered ciphertext). "Stops" means
the best attack's median PSNR is within STOP_MARGIN_DB of the median prior: the attacker learns nothing beyond what
the gradient's label already told it. A run whose attack could not run (nothing visible) counts at its prior.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

STOP_MARGIN_DB = 1.0
Row = Mapping[str, Any]
COLUMNS = ("protection", "attacker", "best attack", "PSNR (dB)", "prior (dB)", "gain (dB)", "SSIM", "recovered",
           "utility", "plain utility", "HE s/round", "HE bytes/round", "verdict")  # fmt: skip


def protection(row: Row) -> str:
    """A readable name of the protection a row ran under."""
    cfg = row.get("config") or {}
    scenario = row.get("scenario")
    parts = [str(scenario)]
    if scenario == "ckks-input":
        parts.append(str(row.get("encryptor")))
    elif scenario == "he-train":
        parts.append(f"{cfg.get('model')} {cfg.get('activation')}, {cfg.get('loss') or 'mse'}")
    elif scenario == "he-aggregate":
        parts.append(f"K={cfg.get('clients', 1)}")
        if cfg.get("encrypt_layers"):
            parts.append(f"layers /{cfg['encrypt_layers']}/ encrypted")
        elif (p := cfg.get("encrypt_fraction", 1.0)) >= 1.0:
            parts.append("all encrypted")
        else:
            parts.append(f"p={p:g} {cfg.get('select', 'sensitivity')}")
    for name in ("clip", "prune", "noise"):
        value = cfg.get(name)
        if value:
            parts.append(f"{name} {value:g}")
    return " · ".join(parts)


def attackers(row: Row) -> dict[str, tuple[float | None, float | None]]:
    """Attacker → (PSNR of its estimate, SSIM) for one row; a run that could not attack counts at its prior."""
    scenario = row.get("scenario")
    prior = row.get("prior_psnr")
    keyless = row.get("plaintext_psnr")
    if keyless is None and row.get("error"):
        keyless = prior
    if scenario == "ckks-input":
        return {"keyless": (keyless, row.get("plaintext_ssim")),
                "key holder": (row.get("key_plaintext_psnr"), row.get("key_plaintext_ssim"))}  # fmt: skip
    who = {"he-aggregate": f"{(row.get('config') or {}).get('role', 'server')}", "he-train": "sees the update"}
    return {who.get(str(scenario), "sees the gradient"): (keyless, row.get("plaintext_ssim"))}


def _median(values: Sequence[float | None]) -> float | None:
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]
    return float(statistics.median(numbers)) if numbers else None


def summarise(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """One record per (protection, attacker): the attack with the best median PSNR and its figures."""
    groups: dict[tuple[str, str], dict[str, list[Row]]] = {}
    for row in rows:
        for who in attackers(row):
            groups.setdefault((protection(row), who), {}).setdefault(str(row.get("attack")), []).append(row)
    out = []
    for (name, who), by_attack in groups.items():
        scored = []
        for attack, runs in by_attack.items():
            psnr = _median([attackers(r)[who][0] for r in runs])
            scored.append((psnr if psnr is not None else -math.inf, attack, runs))
        psnr, attack, runs = max(scored, key=lambda s: s[0])
        every = [r for rs in by_attack.values() for r in rs]
        prior = _median([r.get("prior_psnr") for r in runs])
        psnr_value = psnr if math.isfinite(psnr) else None
        gain = None if psnr_value is None or prior is None else psnr_value - prior
        recovered = sum(int(r.get("recovered") or 0) for r in runs)
        samples = sum(int((r.get("config") or {}).get("batch", 1)) * _clients(r) for r in runs)
        out.append({
            "protection": name, "attacker": who, "attack": attack, "psnr": psnr_value, "prior": prior, "gain": gain,
            "ssim": _median([attackers(r)[who][1] for r in runs]), "recovered": f"{recovered}/{samples}",
            "utility": _median([r.get("utility") for r in every]),
            "utility_plain": _median([r.get("utility_plain") for r in every]),
            "he_seconds": _median([r.get("he_seconds") for r in every]),
            "he_bytes": _median([r.get("he_bytes") for r in every]),
            "stops": gain is not None and gain <= STOP_MARGIN_DB,
        })  # fmt: skip
    return out


def _clients(row: Row) -> int:
    cfg = row.get("config") or {}
    return int(cfg.get("clients", 1)) if row.get("scenario") == "he-aggregate" and cfg.get("role") == "client" else 1


def _f(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _bytes(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1e6:.2f} MB" if value >= 1e5 else f"{value / 1e3:.1f} kB"


def verdict(record: Mapping[str, Any]) -> str:
    """stops / does not stop, with the margin, in a few words."""
    if record["gain"] is None:
        return "no estimate"
    if record["stops"]:
        return f"stops it (within {STOP_MARGIN_DB:g} dB of the prior)"
    return f"does not stop it (+{record['gain']:.1f} dB over the prior)"


def table(rows: Sequence[Row]) -> list[str]:
    """Markdown lines of the protection table (empty when the rows hold a single protection)."""
    records = summarise(rows)
    if len({r["protection"] for r in records}) < 2:
        return []
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in records:
        cells = [r["protection"], r["attacker"], r["attack"], _f(r["psnr"]), _f(r["prior"]), _f(r["gain"]),
                 _f(r["ssim"], 3), r["recovered"], _f(r["utility"], 3), _f(r["utility_plain"], 3),
                 _f(r["he_seconds"], 2), _bytes(r["he_bytes"]), verdict(r)]  # fmt: skip
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def sentences(rows: Sequence[Row]) -> list[str]:
    """One verdict line per protection, naming every attacker it stops or not."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in summarise(rows):
        by.setdefault(r["protection"], []).append(r)
    out = []
    for name, records in by.items():
        parts = [f"{r['attacker']}: {verdict(r)} — best {r['attack']} at {_f(r['psnr'])} dB vs prior "
                 f"{_f(r['prior'])} dB" for r in records]  # fmt: skip
        cost = records[0]
        extra = [f"utility {_f(cost['utility'], 3)} (plaintext {_f(cost['utility_plain'], 3)})"] if cost["utility"] \
            is not None else []  # fmt: skip
        if cost["he_seconds"] is not None:
            extra.append(f"HE {_f(cost['he_seconds'], 2)} s and {_bytes(cost['he_bytes'])} per round")
        out.append(f"- **{name}** — " + "; ".join(parts) + (". " + ", ".join(extra) + "." if extra else "."))
    return out


def figure(rows: Sequence[Row], path: Path) -> Path | None:
    """Horizontal bars: each (protection, attacker)'s gain over its prior (dB), utility written beside them."""
    records = summarise(rows)
    records = [r for r in records if r["gain"] is not None]
    if len({r["protection"] for r in records}) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['protection']} — {r['attacker']}" for r in records]
    gains = [r["gain"] for r in records]
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(records) + 1.5))
    colours = ["tab:green" if r["stops"] else "tab:red" for r in records]
    ax.barh(range(len(records)), gains, color=colours)
    ax.axvline(STOP_MARGIN_DB, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(records)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("best attack's PSNR over the attacker's prior (dB); green: stopped")
    for i, r in enumerate(records):
        if r["utility"] is not None:
            ax.text(max(gains[i], 0) + 1, i, f"utility {r['utility']:.2f}", va="center", fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
