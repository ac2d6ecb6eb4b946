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


def mean_interval(values: Sequence[float], *, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Bootstrap interval (BCa, BOOTSTRAP_RESAMPLES, seed BOOTSTRAP_SEED) of the mean at `confidence`; None for
    fewer than two values. The values are sorted first, so the interval does not depend on the order rows were
    recorded in. Values that are all equal have no spread to resample: the interval is that value."""
    data = np.sort(np.asarray([v for v in values if finite(v)], dtype=np.float64))  # sorted: order-free
    if data.size < 2:
        return None
    if np.all(data == data[0]):
        return float(data[0]), float(data[0])
    return _bootstrap((data,), np.mean, confidence)


def difference_interval(
    a: Sequence[float], b: Sequence[float], *, paired: bool, confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """Bootstrap interval of mean(a) − mean(b) at `confidence`; None with fewer than two values on a side.

    `paired`: a[i] and b[i] are the same sample measured twice (same image, seed, attack), so the interval is the
    one of the mean of the differences, which removes the sample-to-sample spread both sides share; otherwise the
    two groups are resampled independently (scipy's two-sample bootstrap of the difference of means)."""
    if paired:
        if len(a) != len(b):
            raise ValueError(f"paired samples need equal lengths, got {len(a)} and {len(b)}")
        return mean_interval([x - y for x, y in zip(a, b, strict=True) if finite(x) and finite(y)],
                             confidence=confidence)  # fmt: skip
    left, right = (np.sort(np.asarray([v for v in s if finite(v)], dtype=np.float64)) for s in (a, b))
    if left.size < 2 or right.size < 2:
        return None
    if np.all(left == left[0]) and np.all(right == right[0]):
        return float(left[0] - right[0]), float(left[0] - right[0])

    def difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(x, axis=axis) - np.mean(y, axis=axis)

    return _bootstrap((left, right), difference, confidence)


def _bootstrap(data: tuple[np.ndarray, ...], statistic: Any, confidence: float) -> tuple[float, float]:
    """scipy's BCa interval of `statistic`, the percentile interval where BCa is undefined (e.g. one value apart)."""
    from scipy.stats import bootstrap

    def run(method: str) -> tuple[float, float]:
        result = bootstrap(data, statistic, n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=confidence,
                           method=method, random_state=np.random.default_rng(BOOTSTRAP_SEED))  # fmt: skip
        return float(result.confidence_interval.low), float(result.confidence_interval.high)

    with warnings.catch_warnings():  # scipy warns when BCa is undefined; that case is handled below
        warnings.simplefilter("ignore")
        low, high = run("BCa")
    if not (math.isfinite(low) and math.isfinite(high)):
        low, high = run("percentile")
    return low, high


def sample_keys(row: Row) -> list[tuple[Any, ...]]:
    """Which samples a row scored, as keys that match across result folders and protections: (data, index, seed,
    utility run or not, position in the batch)."""
    cfg = row.get("config") or {}
    head = (str(cfg.get("data")), cfg.get("index"), cfg.get("seed"), bool(cfg.get("utility")))
    return [(*head, position) for position in range(sample_count(row))]


def keyed_gains(row: Row, estimate: str, *, failed_as_prior: bool = False) -> list[tuple[tuple[Any, ...], float]]:
    """(sample key, gain of `estimate` over the prior) per sample. A sample without the estimate has no gain, or,
    with `failed_as_prior`, a gain of 0: the attacker that got nothing for it keeps its prior."""
    values, prior, keys = sample_psnrs(row, estimate), sample_psnrs(row, PRIOR), sample_keys(row)
    if values is None or prior is None or len(values) != len(prior) or len(values) != len(keys):
        return [(k, 0.0) for k in keys] if failed_as_prior else []
    pairs = zip(keys, values, prior, strict=True)
    if failed_as_prior:
        return [(k, 0.0 if v is None or p is None else v - p) for k, v, p in pairs]
    return [(k, v - p) for k, v, p in pairs if v is not None and p is not None]


def align(
    a: Sequence[tuple[tuple[Any, ...], float]], b: Sequence[tuple[tuple[Any, ...], float]]
) -> tuple[list[float], list[float], bool]:
    """The values of two keyed groups and whether they pair: both hold the same samples, each once; then in the same
    sample order."""
    keys_a, keys_b = [k for k, _ in a], [k for k, _ in b]
    if len(set(keys_a)) == len(keys_a) == len(keys_b) and set(keys_a) == set(keys_b):
        other = dict(b)
        return [v for _, v in a], [other[k] for k, _ in a], True
    return [v for _, v in a], [v for _, v in b], False
