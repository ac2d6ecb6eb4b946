"""One attack run, end to end: data → scenario.observe → attack.reconstruct → scenario.interpret → metrics → Result."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from he_leak import attacks as _attacks  # noqa: F401  (registers the attacks)
from he_leak import scenarios as _scenarios  # noqa: F401  (registers the scenarios)
from he_leak.attacks.base import Attack, AttackOptions, Progress, make_attack
from he_leak.config import RunConfig
from he_leak.data import check_labels, load_dataset
from he_leak.data.prior import Prior
from he_leak.errors import AttackFailed, ConfigError, HeLeakError
from he_leak.models import ModelSpec, build_model, memory, shape_model
from he_leak.models.local import pretrain
from he_leak.records import Observation, Reconstruction, Result, Truth, versions
from he_leak.scenarios.base import SCENARIOS, Pool, Scenario, model_spec
from he_leak.scoring.metrics import psnr
from he_leak.scoring.score import Outcome, prior_only, score, unscored
from he_leak.scoring.utility_accuracy import dp_epsilon
from he_leak.seeds import KeySeed, derive

# What a numerically failed attack raises: recorded as a failed row, never dropped (config errors propagate).
RUN_FAILURES = (AttackFailed, RuntimeError, FloatingPointError, np.linalg.LinAlgError, ArithmeticError)

__all__ = ["RUN_FAILURES", "Outcome", "RunContext", "finish", "prepare", "resolve_device", "run_one", "run_outcome",
           "run_outcomes"]


def resolve_device(name: str) -> torch.device:
    """`auto` → CUDA when available, else CPU; `cuda` without a GPU is a ConfigError."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here; use --device auto or --device cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass(frozen=True)
class RunContext:
    """A prepared run: everything known before the attack starts. The attack sees `observation` only; `truth` and
    `pool` are for scoring; `base` is the Result with the fields known before the attack."""

    cfg: RunConfig
    spec: ModelSpec
    scenario: Scenario
    observation: Observation
    truth: Truth | None  # None: unknown (a captured update without the client's data): nothing is scored
    pool: Pool
    attack: Attack
    base: Result


def prepare(cfg: RunConfig, *, key_seed: KeySeed | None = None, progress: Progress | None = None) -> RunContext:
    """Load the batch, build the seeded model, let the scenario produce what the attacker observes, and make the
    attack. The key holder's secrets come from `key_seed` (he_leak.seeds.KeySeed; None: fresh OS randomness), never
    from `cfg`."""
    device = resolve_device(cfg.device)
    ds = load_dataset(cfg.data, layout=cfg.layout, normalize=cfg.normalize)
    scenario = SCENARIOS[cfg.scenario](cfg, key_seed=key_seed)
    check_labels(ds.labels, cfg.classes, where=cfg.data)  # the whole set: the attacker's pool uses every label
    targets = ds.indices(cfg.index, scenario.samples, asked=scenario.samples_asked)
    spec = model_spec(cfg, scenario.input_shape(ds.shape))
    memory.check(memory.estimate(
        cfg, model=shape_model(spec), input_shape=spec.input_shape, image_values=int(np.prod(ds.shape)),
        dataset_size=len(ds), samples=scenario.samples, decoder_samples=scenario.decoder_samples(ds.shape),
    ))  # fmt: skip
    pool = Pool(ds, targets, Prior.of(ds.images, ds.labels, classes=cfg.classes, exclude=targets))
    model = staged_model(cfg, spec, pool, loss=scenario.loss)
    observed = scenario.observe(model, torch.from_numpy(ds.images[targets]), torch.from_numpy(ds.labels[targets]))
    options = AttackOptions(iterations=cfg.iterations, restarts=cfg.restarts, lr=cfg.lr, tv=cfg.tv,
                            seed=derive(cfg.seed, "attack"), device=device, progress=progress, unroll=cfg.unroll,
                            bn_prior=cfg.bn_prior)  # fmt: skip
    attack = make_attack(cfg.attack, options)
    attack.check(observed.observation)  # refusals in one line, before the attack runs
    # he-aggregate's server attacks client 0's batch only
    attacked = [] if observed.truth is None else observed.truth.plaintext.double().numpy()
    base = Result(
        scenario=cfg.scenario, encryptor=scenario.encryptor, model=cfg.model, attack=cfg.attack, data=cfg.data,
        index=cfg.index, seed=cfg.seed, batch=cfg.batch, device=device.type, restarts=cfg.restarts,
        insecure=scenario.insecure, config=cfg.key(),
        security_index=security_index(spec, cfg.batch, model=model if cfg.pretrain_epochs else None),
        mean_psnr=float(np.mean([psnr(pool.prior.overall, img) for img in attacked])) if len(attacked) else None,
        defences=scenario.defences or None, he_params=scenario.he_params(), key_source=scenario.key_source,
        truth_known=None if cfg.update is None else observed.truth is not None, dp_epsilon=dp_epsilon(cfg, ds),
        versions=versions(), **observed.cost.result_fields(), **observed.fields,
    )  # fmt: skip
    return RunContext(cfg, spec, scenario, observed.observation, observed.truth, pool, attack, base)


def staged_model(cfg: RunConfig, spec: ModelSpec, pool: Pool, *, loss: str) -> torch.nn.Module:
    """The attacked model: seeded (or `--weights`), then trained for `--pretrain-epochs` on the dataset without the
    attacked samples (he_leak.models.local.pretrain)."""
    model = build_model(spec)
    if cfg.pretrain_epochs:
        others = pool.others
        pretrain(model, pool.dataset.images[others], pool.dataset.labels[others], epochs=cfg.pretrain_epochs,
                 loss=loss, seed=derive(cfg.seed, "pretrain"))  # fmt: skip
    return model


def security_index(spec: ModelSpec, batch: int, *, model: torch.nn.Module | None = None) -> float | None:
    """The audit's security index of this model and batch (of `model` when given: a trained one, else of the
    spec's, cached per spec: a model build and a few small ranks); None when the audit cannot analyse it."""
    if model is None:
        return _spec_index(spec, batch)
    from he_leak.models.audit import audit

    try:
        return float(audit(spec, batch=batch, model=model).security_index) + 0.0  # no -0.0
    except (RuntimeError, ValueError, ArithmeticError, HeLeakError):
        return None


@functools.lru_cache(maxsize=256)
def _spec_index(spec: ModelSpec, batch: int) -> float | None:
    from he_leak.models.audit import audit

    try:
        return float(audit(spec, batch=batch).security_index)
    except (RuntimeError, ValueError, ArithmeticError, HeLeakError):
        return None


def finish(ctx: RunContext, rec: Reconstruction | Exception, seconds: float) -> Outcome:
    """Score a reconstruction (or record the failure) and add the utility when asked."""
    if isinstance(rec, Reconstruction) and not torch.isfinite(rec.inputs).all():
        rec = AttackFailed("the reconstruction holds NaN or inf values")
    if ctx.truth is None:  # a captured update without the client's data: the reconstruction, nothing scored
        return unscored(ctx.observation, rec, dataclasses.replace(ctx.base, seconds=seconds))
    if isinstance(rec, Exception):
        failed = dataclasses.replace(ctx.base, seconds=seconds, success=False, error=f"{type(rec).__name__}: {rec}")
        result = prior_only(ctx.truth, ctx.observation, ctx.pool, failed)
        outcome = Outcome(result, {"truth": ctx.truth.plaintext.numpy()})
    else:
        base = dataclasses.replace(ctx.base, seconds=seconds, label_orders=rec.info.get("label_orders"))
        outcome = score(ctx.scenario, ctx.observation, ctx.truth, ctx.pool, rec, base)
    if ctx.cfg.utility:  # what the protection costs does not depend on whether this attack ran
        from he_leak.scoring.utility_accuracy import utility

        acc, plain = utility(ctx.cfg, ctx.scenario, ctx.pool.dataset)
        outcome = dataclasses.replace(
            outcome, result=dataclasses.replace(outcome.result, utility=acc, utility_plain=plain,
                                                utility_measured=ctx.scenario.utility_measured)
        )  # fmt: skip
    return outcome


def run_outcome(cfg: RunConfig, *, progress: Progress | None = None, key_seed: KeySeed | None = None) -> Outcome:
    """Run one attack and keep the images for figures; numerical failures become a row with success=False and
    `error` set. `key_seed`: the key holder's secret (None: fresh OS randomness); the same config and key seed give
    the same Result except timings (`seconds`: the attack alone; `run_seconds`: the whole run)."""
    begun = time.perf_counter()
    ctx = prepare(cfg, key_seed=key_seed, progress=progress)
    torch.manual_seed(derive(cfg.seed, "attack", "torch"))
    start = time.perf_counter()
    try:
        rec: Reconstruction | Exception = ctx.attack.reconstruct(ctx.observation)
    except RUN_FAILURES as e:
        rec = e
    return timed(finish(ctx, rec, time.perf_counter() - start), time.perf_counter() - begun)


def timed(outcome: Outcome, run_seconds: float) -> Outcome:
    """The outcome with the whole run's wall time recorded (Result.run_seconds)."""
    return dataclasses.replace(outcome, result=dataclasses.replace(outcome.result, run_seconds=run_seconds))


def run_outcomes(cfgs: Sequence[RunConfig], *, key_seeds: Sequence[KeySeed | None] | None = None) -> list[Outcome]:
    """Runs that differ only in index and seed and whose attack is `batchable` (he_leak.sweep.worker.group_runs):
    their observations go through one `reconstruct_many` (one batched objective); the same outcomes as `run_outcome`
    one by one (`key_seeds`: one per run, None: fresh), except `seconds` and `run_seconds`, the group's times shared
    equally."""
    begun = time.perf_counter()
    keys = [None] * len(cfgs) if key_seeds is None else list(key_seeds)
    contexts = [prepare(cfg, key_seed=key) for cfg, key in zip(cfgs, keys, strict=True)]
    start = time.perf_counter()
    try:
        recs: list[Reconstruction | Exception] = list(contexts[0].attack.reconstruct_many(
            [c.observation for c in contexts], seeds=[c.attack.options.seed for c in contexts]
        ))  # fmt: skip
    except RUN_FAILURES as e:
        recs = [e] * len(cfgs)
    seconds = (time.perf_counter() - start) / len(cfgs)
    outcomes = [finish(ctx, rec, seconds) for ctx, rec in zip(contexts, recs, strict=True)]
    return [timed(o, (time.perf_counter() - begun) / len(cfgs)) for o in outcomes]


def run_one(cfg: RunConfig, *, progress: Progress | None = None, key_seed: KeySeed | None = None) -> Result:
    """Run one attack and return its Result (the contract of docs/design.md); `key_seed` as in `run_outcome`."""
    return run_outcome(cfg, progress=progress, key_seed=key_seed).result
