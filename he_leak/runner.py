"""One attack run, end to end: data → scenario.observe → attack.reconstruct → scenario.interpret → metrics → Result."""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass

import numpy as np
import torch

from he_leak import attacks as _attacks  # noqa: F401  (registers the attacks)
from he_leak import scenarios as _scenarios  # noqa: F401  (registers the scenarios)
from he_leak.attacks.base import AttackOptions, Progress, make_attack
from he_leak.config import RunConfig
from he_leak.data import load_dataset
from he_leak.errors import AttackFailed, ConfigError, HeLeakError
from he_leak.metrics import image_scores, label_accuracy, match, mse, psnr, symbol_exact
from he_leak.models import ModelSpec, build_model
from he_leak.records import Observation, Reconstruction, Result, Truth
from he_leak.scenarios.base import SCENARIOS, Scenario

# What a numerically failed attack raises: recorded as a failed row, never dropped (config errors propagate).
RUN_FAILURES = (AttackFailed, RuntimeError, FloatingPointError, np.linalg.LinAlgError, ArithmeticError)


@dataclass(frozen=True)
class Outcome:
    """A Result plus the images behind it (B×C×H×W arrays in [0,1]) for figures."""

    result: Result
    panels: dict[str, np.ndarray]


def resolve_device(name: str) -> torch.device:
    """`auto` → CUDA when available, else CPU; `cuda` without a GPU is a ConfigError."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here; use --device auto or --device cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def prepare(cfg: RunConfig) -> tuple[Scenario, Observation, Truth]:
    """Load the batch, build the seeded model and let the scenario produce what the attacker observes."""
    ds = load_dataset(cfg.data)
    images, labels = ds.batch(cfg.index, cfg.batch)
    if labels.max() >= cfg.classes:
        raise ConfigError(f"{cfg.data} has label {labels.max()} but --classes is {cfg.classes}; raise --classes")
    scenario = SCENARIOS[cfg.scenario](cfg)
    spec = ModelSpec(
        name=cfg.model, input_shape=scenario.input_shape(ds.shape), classes=cfg.classes, hidden=cfg.hidden,
        width=cfg.width, stride=cfg.stride, activation=cfg.activation, seed=cfg.seed,
    )  # fmt: skip
    model = build_model(spec)
    obs, truth = scenario.observe(model, torch.from_numpy(images), torch.from_numpy(labels))
    mean_image = ds.images.mean(axis=0, dtype=np.float64)
    truth.extras["mean_psnr"] = float(np.mean([psnr(mean_image, img) for img in images]))
    truth.extras["security_index"] = security_index(spec, cfg.batch)
    return scenario, obs, truth


@functools.lru_cache(maxsize=256)
def security_index(spec: ModelSpec, batch: int) -> float | None:
    """The audit's security index of this model and batch (cached per spec: a model build and a few small ranks);
    None when the audit cannot analyse the model."""
    from he_leak.audit import audit

    try:
        return float(audit(spec, batch=batch).security_index) + 0.0  # no -0.0
    except (RuntimeError, ValueError, ArithmeticError, HeLeakError):
        return None


def run_one(cfg: RunConfig, *, progress: Progress | None = None) -> Outcome:
    """Run one attack; numerical failures become a row with success=False and `error` set."""
    device = resolve_device(cfg.device)
    scenario, obs, truth = prepare(cfg)
    attack = make_attack(
        cfg.attack,
        AttackOptions(
            iterations=cfg.iterations, restarts=cfg.restarts, lr=cfg.lr, tv=cfg.tv, seed=cfg.seed, device=device,
            progress=progress,
        ),
    )  # fmt: skip
    base = Result(
        scenario=cfg.scenario, encryptor=scenario.encryptor, model=cfg.model, attack=cfg.attack, data=cfg.data,
        index=cfg.index, seed=cfg.seed, batch=cfg.batch, device=device.type, restarts=cfg.restarts,
        insecure=scenario.insecure, mean_psnr=truth.extras["mean_psnr"], config=cfg.key(),
        security_index=truth.extras.get("security_index"),
    )  # fmt: skip
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    try:
        rec = attack.reconstruct(obs)
        if not torch.isfinite(rec.inputs).all():
            raise AttackFailed("the reconstruction holds NaN or inf values")
    except RUN_FAILURES as e:
        seconds = time.perf_counter() - start
        failed = dataclasses.replace(base, seconds=seconds, success=False, error=f"{type(e).__name__}: {e}")
        return Outcome(failed, {"truth": truth.plaintext.numpy()})
    seconds = time.perf_counter() - start
    return score(scenario, obs, truth, rec, dataclasses.replace(base, seconds=seconds))


def score(scenario: Scenario, obs: Observation, truth: Truth, rec: Reconstruction, base: Result) -> Outcome:
    """Match recovered inputs to true ones, interpret them as plaintext and fill the Result's metrics."""
    rec_x = rec.inputs.detach().cpu().double()
    true_x = truth.inputs.double()
    order = match(rec_x.numpy(), true_x.numpy())
    rec = dataclasses.replace(
        rec,
        inputs=rec_x[order],
        labels=None if rec.labels is None else rec.labels.detach().cpu()[order],
    )
    est = scenario.interpret(rec, truth)
    plain = truth.plaintext.numpy()
    fields: dict[str, object] = {"iterations": rec.iterations, "error": rec.error}
    inputs_np, true_np = rec.inputs.numpy(), true_x.numpy()
    fields["input_mse"] = mse(inputs_np, true_np)
    fields["input_psnr"] = float(np.mean([psnr(a, b) for a, b in zip(inputs_np, true_np, strict=True)]))
    if len(obs.input_shape) == 3:
        fields["input_ssim"] = image_scores(inputs_np, true_np)["ssim"]
    per_sample: list[float] = []
    if obs.quantum:
        per_sample = [symbol_exact(a, b, quantum=obs.quantum) for a, b in zip(inputs_np, true_np, strict=True)]
        fields["symbol_exact"] = float(np.mean(per_sample))
    if rec.labels is not None:
        fields["label_correct"] = label_accuracy(rec.labels.numpy(), truth.labels.numpy())
    panels = {"truth": plain}
    if est.keyless is not None:
        keyless = np.clip(est.keyless.detach().cpu().double().numpy(), 0, 1)
        s = image_scores(keyless, plain)
        fields.update(plaintext_mse=s["mse"], plaintext_psnr=s["psnr"], plaintext_ssim=s["ssim"])
        fields["keyless_gain"] = s["psnr"] - truth.extras["mean_psnr"]
        panels["keyless"] = keyless
        if not obs.quantum:
            per_sample = list(s["psnrs"])
    if est.with_key is not None:
        keyed = np.clip(est.with_key.detach().cpu().double().numpy(), 0, 1)
        s = image_scores(keyed, plain)
        fields.update(key_plaintext_psnr=s["psnr"], key_plaintext_ssim=s["ssim"])
        panels["decrypted"] = keyed
    if est.decrypts is not None:
        fields["decrypts"] = bool(est.decrypts.all())
    panels.update(scenario.panels(rec, truth))
    threshold = scenario.threshold()
    fields["recovered"] = int(sum(v >= threshold for v in per_sample)) if per_sample else None
    result = dataclasses.replace(base, **fields)  # type: ignore[arg-type]
    result = dataclasses.replace(result, success=scenario.success(result.to_dict()) and rec.error is None)
    return Outcome(result, panels)
