"""`leakage(...)`: what one attacker recovers under one protection, measured and judged in a user's own test::

    from he_leak.ci import leakage

    def test_the_server_learns_nothing():
        assert leakage(scenario="he-aggregate", role="server", model="mlp", hidden=[32]).gain_db <= 1.0

It runs every attack in `attacks` on `samples` distinct samples (each with its own seed) and judges the attacker as
the verdict table does (he_leak.report.protection): the best attack, its recovered share with the Clopper–Pearson
interval, its mean per-sample gain over the prior with the bootstrap interval. A failed assertion shows the numbers:
pytest prints the Leakage's repr (verdict, best attack, k/n recovered, gain and interval, worst PSNR) beside the
value compared. An attacker that got no estimate keeps its prior: its gain is 0 (and its verdict says why).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from he_leak.config import RunConfig
from he_leak.errors import ConfigError
from he_leak.report.protection import Cell, summarise
from he_leak.text import fixed


@dataclass(frozen=True)
class Leakage:
    """One (protection, attacker): the verdict and the best attack's figures (None where nothing was scored)."""

    protection: str
    attacker: str
    verdict: str
    reason: str
    attack: str | None
    samples: int
    recovered: int
    recovery_ci: tuple[float, float]
    gain_db: float  # the best attack's mean per-sample gain over the prior; 0 when no attack produced an estimate
    gain_ci: tuple[float, float] | None
    psnr_median: float | None
    psnr_worst: float | None
    prior_db: float | None
    rows: tuple[dict[str, Any], ...] = field(default=(), repr=False, compare=False)

    @property
    def recovery_high(self) -> float:
        """The 95% Clopper–Pearson upper bound of the recovered share."""
        return self.recovery_ci[1]

    @property
    def gain_high(self) -> float:
        """The upper end of the 95% bootstrap interval of the mean gain (the mean itself with < 2 samples)."""
        return self.gain_db if self.gain_ci is None else self.gain_ci[1]

    def __repr__(self) -> str:
        ci = "" if self.gain_ci is None else f" [{fixed(self.gain_ci[0], sign=True)}, " \
                                              f"{fixed(self.gain_ci[1], sign=True)}]"  # fmt: skip
        best = f"{self.attack} {self.recovered}/{self.samples} recovered" if self.attack else "no estimate"
        return (f"Leakage({self.protection} — {self.attacker}: {self.verdict}; {best}, mean gain "
                f"{fixed(self.gain_db, sign=True)} dB{ci} over a {fixed(self.prior_db)} dB prior, worst PSNR "
                f"{fixed(self.psnr_worst)} dB)")  # fmt: skip

    @classmethod
    def from_cell(cls, cell: Cell) -> Leakage:
        best = cell.best
        if best is None:
            return cls(protection=cell.protection, attacker=cell.attacker, verdict=cell.verdict, reason=cell.reason,
                       attack=None, samples=0, recovered=0, recovery_ci=(0.0, 1.0), gain_db=0.0, gain_ci=None,
                       psnr_median=None, psnr_worst=None, prior_db=_prior(cell), rows=cell.rows)  # fmt: skip
        return cls(protection=cell.protection, attacker=cell.attacker, verdict=cell.verdict, reason=cell.reason,
                   attack=best.attack, samples=best.n, recovered=best.k, recovery_ci=best.rate_ci,
                   gain_db=best.gain_mean if best.gain_mean is not None else 0.0, gain_ci=best.gain_ci,
                   psnr_median=best.psnr_median, psnr_worst=best.psnr_worst, prior_db=best.prior_median,
                   rows=cell.rows)  # fmt: skip


def _prior(cell: Cell) -> float | None:
    priors = [a.prior_median for a in cell.attacks if a.prior_median is not None]
    return priors[0] if priors else None


def leakage(
    *, scenario: str = "plain", attacks: Sequence[str] = ("analytic", "idlg"), samples: int = 20,
    attacker: str | None = None, first_index: int = 0, **options: Any,
) -> Leakage:  # fmt: skip
    """Run `attacks` × `samples` (index first_index + i·batch·clients, seed i + 1) with the RunConfig `options`
    (model, hidden, data, role, encryptor, noise, …) and judge `attacker` (needed only where a scenario has two:
    ckks-input's "keyless" and "key holder"). Bad options raise a one-line ConfigError."""
    from he_leak.runner import run_one

    if samples < 1:
        raise ConfigError(f"samples must be at least 1, got {samples}")
    if not attacks:
        raise ConfigError("attacks is empty; name at least one, e.g. attacks=('analytic', 'idlg')")
    if fixed_here := sorted({"attack", "index", "seed"} & set(options)):
        raise ConfigError(f"leakage() sets {', '.join(fixed_here)} per run itself; use scenario=, attacks=, "
                          f"first_index=")  # fmt: skip
    step = int(options.get("batch", 1)) * int(options.get("clients", 1))
    cfgs = [RunConfig.from_mapping({**options, "scenario": scenario, "attack": attack, "index": first_index + i * step,
                                    "seed": i + 1}, where="leakage()")
            for attack in attacks for i in range(samples)]  # every run checked before the first one starts
    rows = [run_one(cfg).to_dict() for cfg in cfgs]
    cells = {cell.attacker: cell for cell in summarise(rows)}
    if attacker is None and len(cells) > 1:
        raise ConfigError(f"{scenario} has attackers {', '.join(cells)}: pass attacker=<one of them>")
    if attacker is not None and attacker not in cells:
        raise ConfigError(f"attacker {attacker!r}: {scenario} has {', '.join(cells)}")
    return Leakage.from_cell(cells[attacker] if attacker is not None else next(iter(cells.values())))
