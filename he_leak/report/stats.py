"""Per-sample statistics of result rows, and the intervals a verdict rests on.

A Result keeps, per attacked sample, the PSNR of each estimate (`sample_psnrs`: "keyless" — the attacker's own
plaintext estimate, behind `plaintext_psnr`; "key holder" — a key holder's decryption of the recovered input, behind
`key_plaintext_psnr`; "prior" — the prior image the attacker has anyway, behind `prior_psnr`). From those:

- a recovery rate k/n with its Clopper–Pearson interval (`scipy.stats.binomtest(k, n).proportion_ci(method="exact")`);
- the per-sample gain of an estimate over the prior (dB) with a bootstrap interval of its mean
  (`scipy.stats.bootstrap`, BCa, a fixed seed so that a report is the same every time it is written).

One home for the confidence level, the resample count and the seed; he_leak.report.protection (verdicts, tables) and
he_leak.report.expectations (`[[expect]]` aggregates) both use these functions.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from he_leak.records import KEY_HOLDER, KEYLESS, PRIOR
from he_leak.text import finite

CONFIDENCE = 0.95  # two-sided level of every interval
BOOTSTRAP_RESAMPLES = 9999  # scipy's default
BOOTSTRAP_SEED = 0  # fixed: the same rows give the same interval in every report

# which estimate a Result metric is about, and which per-sample count belongs to it
METRIC_ESTIMATE = {"plaintext_psnr": KEYLESS, "keyless_gain": KEYLESS, "key_plaintext_psnr": KEY_HOLDER}
COUNT_METRICS = ("recovered", "keyless_recovered")
# the scalar a batch-1 row without sample_psnrs (recorded before the field existed) falls back to
_SCALAR = {KEYLESS: "plaintext_psnr", KEY_HOLDER: "key_plaintext_psnr", PRIOR: "prior_psnr"}

Row = Mapping[str, Any]


def sample_psnrs(row: Row, estimate: str) -> list[float | None] | None:
    """The per-sample PSNR of `estimate` in a row (None entries where a sample has none), or None when the row has
    no such estimate. A batch-1 row without `sample_psnrs` falls back to its scalar."""
    table = row.get("sample_psnrs")
    if isinstance(table, Mapping):
        values = table.get(estimate)
        return None if values is None else [float(v) if finite(v) else None for v in values]
    scalar = row.get(_SCALAR[estimate])
    return [float(scalar)] if finite(scalar) and row.get("batch", 1) == 1 else None


def sample_gains(row: Row, estimate: str) -> list[float]:
    """Per-sample PSNR of `estimate` minus the prior's (dB), for the samples that have both."""
    values, prior = sample_psnrs(row, estimate), sample_psnrs(row, PRIOR)
    if values is None or prior is None or len(values) != len(prior):
        return []
    return [v - p for v, p in zip(values, prior, strict=True) if v is not None and p is not None]


def sample_count(row: Row) -> int:
    """How many samples a row scored (the prior is scored for every attacked sample, even when the attack failed)."""
    prior = sample_psnrs(row, PRIOR)
    if prior is not None:
        return len(prior)
    return int(row.get("batch") or 1)


def recovery_interval(k: int, n: int) -> tuple[float, float]:
    """Clopper–Pearson (exact) interval of a recovery rate k/n at CONFIDENCE; (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=CONFIDENCE, method="exact")
    return float(ci.low), float(ci.high)


def mean_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """Bootstrap interval (BCa, BOOTSTRAP_RESAMPLES, seed BOOTSTRAP_SEED) of the mean at CONFIDENCE; None for fewer
    than two values. The values are sorted first, so the interval does not depend on the order rows were recorded
    in. Values that are all equal have no spread to resample: the interval is that value."""
    data = np.sort(np.asarray([v for v in values if finite(v)], dtype=np.float64))  # sorted: order-free
    if data.size < 2:
        return None
    if np.all(data == data[0]):
        return float(data[0]), float(data[0])
    from scipy.stats import bootstrap

    def run(method: str) -> tuple[float, float]:
        result = bootstrap((data,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=CONFIDENCE,
                           method=method, random_state=np.random.default_rng(BOOTSTRAP_SEED))  # fmt: skip
        return float(result.confidence_interval.low), float(result.confidence_interval.high)

    with warnings.catch_warnings():  # scipy warns when BCa is undefined; that case is handled below
        warnings.simplefilter("ignore")
        low, high = run("BCa")
    if not (math.isfinite(low) and math.isfinite(high)):  # BCa undefined (e.g. one value apart): percentile
        low, high = run("percentile")
    return low, high
