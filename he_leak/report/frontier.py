"""The privacy–utility–cost frontier: for every (protection, attacker) of he_leak.report.protection, what the best
attack gains over the attacker's prior (mean per-sample gain with its 95% bootstrap interval — the privacy axis),
the test accuracy after the same training budget (utility), the cryptographic work per round (HE seconds and bytes;
for secagg the masking protocol's) and DP-SGD's ε at δ = 1e-5 where defined. One table and one figure (gain against
utility, and gain against seconds per round), both computed from the cells: nothing is hand-entered.

A cell whose attacker has nothing to attack ("nothing in the clear") or whose attack produced no estimate ("attack
failed") has no gain to plot: it is listed in the table with its verdict and drawn at 0 dB with a hollow marker.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from he_leak.report.protection import STOP_MARGIN_DB, Cell, bytes_text, ci_text, summarise
from he_leak.report.stats import CONFIDENCE
from he_leak.text import fixed

COLUMNS = ("#", "protection", "attacker", "verdict", "best attack", "gain over prior: mean [95% CI] (dB)", "recovered",
           "utility (plain)", "cost per round", "ε (δ = 1e-5)")  # fmt: skip


def family(cell: Cell) -> str:
    """The protection's family, for the figure's colours."""
    scenario = str(cell.rows[0].get("scenario")) if cell.rows else cell.protection.split(" · ")[0]
    config = (cell.rows[0].get("config") or {}) if cell.rows else {}
    if config.get("dp_noise") is not None:
        return "DP-SGD"
    if scenario == "plain":
        return "noise defence" if config.get("noise") or config.get("prune") or config.get("clip") else "none"
    if scenario == "he-aggregate":
        return "selective HE" if config.get("encrypt_fraction", 1.0) < 1 else "HE aggregation"
    return {"secagg": "SecAgg", "he-train": "he-train", "ckks-input": "ckks-input"}.get(scenario, scenario)


def row_cells(cell: Cell) -> list[str]:
    best = cell.best
    utility = "—" if cell.utility is None else f"{cell.utility:.3f} ({fixed(cell.utility_plain, 3)})"
    cost = "—" if cell.he_seconds is None else f"{cell.he_seconds:.2f} s, {bytes_text(cell.he_bytes)}"
    epsilon = "—" if cell.epsilon is None else f"{cell.epsilon:.3g}"
    if best is None:
        return [cell.protection, cell.attacker, cell.verdict, "—", "— (keeps its prior)", "—", utility, cost, epsilon]
    return [cell.protection, cell.attacker, cell.verdict, best.attack,
            f"{fixed(best.gain_mean, sign=True)} {ci_text(best.gain_ci)}", f"{best.k}/{best.n}", utility, cost,
            epsilon]  # fmt: skip


def table(cells: Sequence[Cell]) -> list[str]:
    """Markdown lines of the frontier table (empty when the cells hold a single protection); # is the figure's
    label of each row."""
    if len({c.protection for c in cells}) < 2:
        return []
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return lines + ["| " + " | ".join([str(i), *(c.replace("|", "\\|") for c in row_cells(cell))]) + " |"
                    for i, cell in enumerate(cells, start=1)]  # fmt: skip


def markdown(rows: Sequence) -> str:
    """The frontier table and its legend, as report.md holds them (`he-leak table --view frontier`)."""
    lines = table(summarise(rows))
    return "\n".join([*lines, "", legend()]) + "\n" if lines else ""


def legend() -> str:
    return (
        f"Privacy: the best attack's mean per-sample gain over the attacker's prior with its {100 * CONFIDENCE:g}% "
        f"bootstrap interval (≤ +{STOP_MARGIN_DB:g} dB: nothing beyond the prior), and the samples recovered. "
        f"Utility: test accuracy after the same training budget (in brackets the plaintext model's). Cost per round: "
        f"the median seconds and bytes of the protection's cryptography (HE; for secagg the pairwise masking), "
        f"measured on the shared machine that ran the experiment. ε: DP-SGD's at δ = 1e-5 for the utility training "
        f"(Opacus's RDP accountant)."
    )


def _point(cell: Cell) -> tuple[float, float, float] | None:
    """(gain, low, high) of the best attack, or None without an estimate."""
    best = cell.best
    if best is None or best.gain_mean is None:
        return None
    low, high = best.gain_ci or (best.gain_mean, best.gain_mean)
    return best.gain_mean, low, high


def figure(cells: Sequence[Cell], path: Path) -> Path | None:
    """Two panels sharing the privacy axis (gain over the prior, symlog): against utility, and against seconds per
    round; one marker per (protection, attacker), numbered as in ``table``, coloured by family, hollow when there is
    no estimate."""
    drawn = [c for c in cells if c.utility is not None or c.he_seconds is not None]
    if len({c.protection for c in cells}) < 2 or not drawn:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 6), sharey=True)
    colours = {name: plt.get_cmap("tab10")(i) for i, name in enumerate(sorted({family(c) for c in cells}))}
    for ax, x_of, label in ((axes[0], lambda c: c.utility, "test accuracy after the training budget"),
                            (axes[1], lambda c: c.he_seconds, "cryptographic seconds per round (log)")):  # fmt: skip
        for number, cell in enumerate(cells, start=1):
            x, point = x_of(cell), _point(cell)
            if x is None:
                continue
            colour = colours[family(cell)]
            if point is None:
                ax.scatter([x], [0.0], facecolors="none", edgecolors=[colour], marker="o", s=40)
            else:
                gain, low, high = point
                ax.errorbar([x], [gain], yerr=[[gain - low], [high - gain]], fmt="o", color=colour, capsize=2, ms=5)
            ax.annotate(str(number), (x, point[0] if point else 0.0), fontsize=6, xytext=(3, 2),
                        textcoords="offset points")  # fmt: skip
        ax.axhline(STOP_MARGIN_DB, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xlabel(label)
        ax.set_yscale("symlog", linthresh=10)
    axes[1].set_xscale("log")
    axes[0].set_ylabel("best attack's mean gain over the prior (dB), 95% interval")
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=c, label=n) for n, c in colours.items()]
    axes[0].legend(handles=handles, fontsize=7, loc="center left")
    fig.suptitle("privacy – utility – cost per (protection, attacker), numbered as the frontier table's rows; hollow: "
                 "no estimate (nothing in the clear, or the attack failed); right: only protections with cryptography",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
