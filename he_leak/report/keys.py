"""The key-recovery table: he-train runs with `--key-recovery` (the server's IND-CPA-D attack on the decryptions it is
handed, he_leak.scenarios.he_keys) grouped by ring degree, what the key holder disclosed and the flooding — how often
the attacker's own public-key check accepted a key (with its Clopper–Pearson interval) and how often it was the key,
how long the attack took, how far its re-encoded polynomials were from the true decryptions, and how well the
inputs it then decrypted match the client's. Computed from the rows, nothing hand-entered (`he-leak table --view
key-recovery`)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from he_leak.report.stats import CONFIDENCE, recovery_interval
from he_leak.text import median_of

Row = Mapping[str, Any]
COLUMNS = ("N", "model", "disclosed", "flooding", "runs", "key accepted (95% CI)", "it is the key",
           "attack seconds: median [min–max]", "equations / unknowns", "re-encoding error (median, coefficient units)",
           "inputs read: max error (median)")  # fmt: skip


def _group(row: Row) -> tuple[int, str, str, int]:
    """(N, model, disclosure, flood bits — 0 for none), sorting exact before flooded."""
    cfg = row.get("config") or {}
    return (int((row.get("he_params") or {}).get("poly_modulus_degree", 0)), str(cfg.get("model")),
            str(row["key_recovery"]["disclosure"]), int(cfg.get("flood_bits") or 0))  # fmt: skip


def _cells(key: tuple[int, str, str, int], rows: Sequence[Row]) -> list[str]:
    outcomes = [r["key_recovery"] for r in rows]
    n = len(outcomes)
    accepted = sum(bool(o["recovered"]) for o in outcomes)
    correct = sum(bool(o["key_correct"]) for o in outcomes)
    low, high = recovery_interval(accepted, n)
    seconds = [float(o["seconds"]) for o in outcomes]
    errors = [o.get("inputs_max_error") for o in outcomes if o.get("inputs_max_error") is not None]
    equations = statistics.median(int(o["equations"]) for o in outcomes)
    unknowns = statistics.median(int(o["unknowns"]) for o in outcomes)
    flooding = f"2^{key[3]}" if key[3] else "none (exact)"
    return [str(key[0]), key[1], key[2], flooding, str(n), f"{accepted}/{n} ({low:.2f}–{high:.2f})", f"{correct}/{n}",
            f"{statistics.median(seconds):.2f} [{min(seconds):.2f}–{max(seconds):.2f}]",
            f"{equations:g} / {unknowns:g}", f"{median_of(o['reencoding_error'] for o in outcomes):.3g}",
            "—" if not errors else f"{median_of(errors):.1e} ({len(errors)} runs)"]  # fmt: skip


def table(rows: Sequence[Row]) -> list[str]:
    """Markdown lines of the table (empty when no row ran the key recovery)."""
    groups: dict[tuple[int, str, str, int], list[Row]] = {}
    for row in rows:
        if isinstance(row.get("key_recovery"), Mapping):
            groups.setdefault(_group(row), []).append(row)
    if not groups:
        return []
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return lines + ["| " + " | ".join(_cells(k, g)) + " |" for k, g in sorted(groups.items())]


def legend() -> str:
    return (
        f"Key accepted: the attacker's own check (its candidate is ternary and the public key's b + a·s is small); "
        f"in brackets the {100 * CONFIDENCE:g}% Clopper–Pearson interval of that rate. It is the key: the candidate "
        f"equals the key holder's secret key. Equations: exact real equations the disclosed values give (N "
        f"unknowns). Re-encoding error: RMS of the attacker's rounded polynomials minus the true decryptions (0: the "
        f"disclosure determines them exactly; otherwise the noise the linear attack cannot remove). Inputs read: the "
        f"largest error of the client's inputs decrypted with the recovered key, over the runs with a key. Attack "
        f"seconds on the shared machine that ran the experiment (encryptors/key_recovery.py)."
    )


def markdown(rows: Sequence[Row]) -> str:
    lines = table(rows)
    return "\n".join([*lines, "", legend()]) + "\n" if lines else ""
