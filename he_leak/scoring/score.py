"""Scoring one reconstruction: match recovered samples to true ones, interpret them as plaintext (keyless and with
the key), compare with the label-aware prior, and decide per sample whether it was recovered (the scenario's rule).

Per sample the Result keeps each estimate's PSNR (`sample_psnrs`, keys in he_leak.records) and two counts: the
scenario's rule (`recovered`; for ckks-input: a key holder reads the sample) and the keyless estimate's own
(`keyless_recovered`: its PSNR reaches success_psnr), so that each attacker is judged by what it holds.
`visible_fraction` is the share of gradient entries the attacker sees in the clear (Observation.mask).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from he_leak.attacks.labels import recover_labels
from he_leak.errors import AttackFailed
from he_leak.records import KEY_HOLDER, KEYLESS, PRIOR, Observation, Reconstruction, Result, Truth
from he_leak.scenarios.base import Pool, SampleScores, Scenario
from he_leak.scoring.metrics import image_scores, label_accuracy, match, mse, psnr, symbol_exact


@dataclass(frozen=True)
class Outcome:
    """A Result plus the images behind it (B×C×H×W arrays in [0,1]) for figures."""

    result: Result
    panels: dict[str, np.ndarray]


def attacker_labels(obs: Observation, rec: Reconstruction) -> np.ndarray | None:
    """The labels the attacker holds: the attack's own (aligned with its inputs), else what the output layer's
    gradient reveals for a single sample, else None (nothing visible, or a batch whose labels are unordered)."""
    if rec.labels is not None:
        return rec.labels.detach().cpu().numpy()
    if obs.batch != 1:
        return None
    try:
        return recover_labels(obs).numpy()
    except AttackFailed:
        return None


def prior_scores(truth: Truth, pool: Pool, labels: np.ndarray | None) -> tuple[float, list[float]]:
    """Mean and per-sample PSNR of the prior images (class means of the recovered labels, matched to the truth)."""
    plain = truth.plaintext.double().numpy()
    guess = pool.prior.images(labels, len(plain))
    order = match(guess, plain)
    scores = [psnr(g, t) for g, t in zip(guess[order], plain, strict=True)]
    return float(np.mean(scores)), scores


def score(scenario: Scenario, obs: Observation, truth: Truth, pool: Pool, rec: Reconstruction,
          base: Result) -> Outcome:  # fmt: skip
    """Fill the Result's metrics from a reconstruction (see the module docstring)."""
    rec_x = rec.inputs.detach().cpu().double()
    true_x = truth.inputs.double()
    order = match(rec_x.numpy(), true_x.numpy())
    rec = dataclasses.replace(rec, inputs=rec_x[order],
                              labels=None if rec.labels is None else rec.labels.detach().cpu()[order])
    labels = attacker_labels(obs, rec)
    est = scenario.interpret(rec, truth, labels, pool)
    plain = truth.plaintext.double().numpy()
    b = len(plain)
    fields: dict[str, object] = {"iterations": rec.iterations, "error": rec.error}
    exact = _input_fields(obs, rec, truth, fields)
    panels = {"truth": plain}
    keyless_psnrs: list[float | None] = [None] * b
    if est.keyless is not None:
        keyless = np.clip(est.keyless.detach().cpu().double().numpy(), 0, 1)
        s = image_scores(keyless, plain)
        fields.update(plaintext_mse=s["mse"], plaintext_psnr=s["psnr"], plaintext_ssim=s["ssim"])
        keyless_psnrs = list(s["psnrs"])
        panels["keyless" if scenario.encryptor else "recovered"] = keyless  # no key in the run: nothing is keyless
    if est.by_learner:
        fields["keyless_psnrs"] = {
            name: image_scores(np.clip(v.double().numpy(), 0, 1), plain)["psnr"] for name, v in est.by_learner.items()
        }
    key_psnrs: list[float | None] = [None] * b
    key_errors: list[float | None] = [None] * b
    if est.with_key is not None:
        raw = est.with_key.detach().cpu().double().numpy()
        keyed = np.clip(raw, 0, 1)
        s = image_scores(keyed, plain)
        key_psnrs = list(s["psnrs"])
        fields.update(key_plaintext_psnr=s["psnr"], key_plaintext_ssim=s["ssim"],
                      key_holder_recovered=sum(int(p >= scenario.cfg.success_psnr) for p in key_psnrs))
        key_errors = [float(np.abs(r - t).max()) for r, t in zip(raw, plain, strict=True)]
        panels["decrypted"] = keyed
    decrypts: list[bool | None] = [None] * b
    if est.decrypts is not None:
        decrypts = [bool(v) for v in est.decrypts]
        fields["decrypts"] = all(decrypts)
    prior, prior_psnrs = prior_scores(truth, pool, labels)
    fields["prior_psnr"] = prior
    fields["visible_fraction"] = visible_fraction(obs)
    per_sample = {KEYLESS: keyless_psnrs, KEY_HOLDER: key_psnrs, PRIOR: prior_psnrs}
    fields["sample_psnrs"] = {k: _listed(v) for k, v in per_sample.items() if any(x is not None for x in v)}
    if isinstance(fields.get("plaintext_psnr"), float):
        fields["keyless_gain"] = fields["plaintext_psnr"] - prior
    samples = [
        SampleScores(plaintext_psnr=keyless_psnrs[i], view_exact=exact[i], decrypts=decrypts[i],
                     key_psnr=key_psnrs[i], key_error=key_errors[i])
        for i in range(b)
    ]  # fmt: skip
    recovered = [scenario.recovered(s) for s in samples]
    fields["recovered"] = int(sum(recovered))
    if est.keyless is not None:  # the default rule (PSNR >= success_psnr) on the attacker's own estimate
        fields["keyless_recovered"] = int(sum(Scenario.recovered(scenario, SampleScores(p)) for p in keyless_psnrs))
    panels.update(scenario.panels(rec, truth))
    fields["success"] = all(recovered) and rec.error is None
    return Outcome(dataclasses.replace(base, **fields), panels)  # type: ignore[arg-type]


def _input_fields(obs: Observation, rec: Reconstruction, truth: Truth, fields: dict[str, object]) -> list[bool | None]:
    """Model-input metrics (input_*, symbol_exact, label_correct) into `fields`; per sample: is the view exact."""
    inputs_np, true_np = rec.inputs.numpy(), truth.inputs.double().numpy()
    fields["input_mse"] = mse(inputs_np, true_np)
    fields["input_psnr"] = float(np.mean([psnr(a, t) for a, t in zip(inputs_np, true_np, strict=True)]))
    if len(obs.input_shape) == 3:
        fields["input_ssim"] = image_scores(inputs_np, true_np)["ssim"]
    exact: list[bool | None] = [None] * len(true_np)
    if obs.quantum:
        fractions = [symbol_exact(a, t, quantum=obs.quantum) for a, t in zip(inputs_np, true_np, strict=True)]
        fields["symbol_exact"] = float(np.mean(fractions))
        exact = [f == 1.0 for f in fractions]
    if rec.labels is not None:
        fields["label_correct"] = label_accuracy(rec.labels.numpy(), truth.labels.numpy())
    return exact


def prior_only(truth: Truth, obs: Observation, pool: Pool, base: Result) -> Result:
    """A failed attack's row still carries the prior the attacker has from what it sees (no estimate: the row says
    the attack failed, it is not scored as if the attacker had guessed the prior)."""
    try:
        labels = recover_labels(obs).numpy() if obs.batch == 1 else None
    except AttackFailed:
        labels = None
    prior, per_sample = prior_scores(truth, pool, labels)
    return dataclasses.replace(base, prior_psnr=prior, sample_psnrs={PRIOR: _listed(per_sample)},
                               visible_fraction=visible_fraction(obs))  # fmt: skip


def unscored(obs: Observation, rec: Reconstruction | Exception, base: Result) -> Outcome:
    """A run whose truth is unknown (a captured update attacked without the client's data): the Result holds what
    the attack says — iterations, its error or failure — and no truth metric (input_*, plaintext_*, prior, recovered
    stay None; success false: nothing was scored); the reconstruction and the labels the attacker holds are the
    panels `reconstruction` (B×C×H×W in [0,1]) and `labels`."""
    fields: dict[str, object] = {"visible_fraction": visible_fraction(obs), "success": False}
    if isinstance(rec, Exception):
        return Outcome(dataclasses.replace(base, error=f"{type(rec).__name__}: {rec}", **fields), {})
    panels = {"reconstruction": np.clip(rec.inputs.detach().cpu().double().numpy(), 0, 1)}
    labels = attacker_labels(obs, rec)
    if labels is not None:
        panels["labels"] = np.asarray(labels, dtype=np.int64)
    fields.update(iterations=rec.iterations, error=rec.error)
    return Outcome(dataclasses.replace(base, **fields), panels)  # type: ignore[arg-type]


def visible_fraction(obs: Observation) -> float:
    """The fraction of the shared gradient's entries the attacker sees in the clear (1.0 without a mask)."""
    if obs.mask is None:
        return 1.0
    total = sum(m.numel() for m in obs.mask)
    return float(sum(int(m.sum()) for m in obs.mask) / max(total, 1))


def _listed(values: list[float | None]) -> list[float | None]:
    """Per-sample values as JSON-ready floats (None for missing or non-finite)."""
    return [float(v) if v is not None and np.isfinite(v) else None for v in values]
