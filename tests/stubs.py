"""Shared test doubles for the experiment pipeline: a truth-free stub attack, a fake runner with numbers derived
from the config, runners that kill their worker, and small experiment files. Importable by spawned pool workers and
Ray workers (the tests put this folder on their path)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import torch

from he_leak.attacks.base import Attack
from he_leak.config import RunConfig
from he_leak.records import Observation, Reconstruction, Result
from he_leak.runner import Outcome, run_outcome

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STUBS = ("stub-half", "stub-other")
# differ between two executions of the same run; everything else must not
TIMING_KEYS = ("seconds", "run_seconds", "he_seconds")

CHEAP = """
name = "cheap"
description = "closed-form attack on a small MLP: milliseconds per run"
[fixed]
scenario = "plain"
attack = "analytic"
model = "mlp"
hidden = [32]
data = "digits"
[[grid]]
index = {indices}
seed = {seeds}
"""

# the closed form on a small MLP with and without gradient noise: the head of the expectation tests' experiments
NOISE_GRID = """\
[fixed]
model = "mlp"
hidden = [8]
attack = "analytic"

[[grid]]
scenario = ["plain"]
noise = [0.0, 0.1]
"""


def cheap_grid(tmp_path: Path, *, indices: int, seeds: int = 1, name: str = "cheap.toml") -> Path:
    """An experiment of indices × seeds real, cheap runs (plain · analytic · mlp · digits)."""
    return write(tmp_path, CHEAP.format(indices=list(range(indices)), seeds=list(range(seeds))), name)


def write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def without_timings(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMING_KEYS}


def rows_by_config(out: Path) -> dict[str, dict]:
    """A results folder's rows keyed by config, timings dropped, refusing duplicates (a run recorded twice)."""
    from he_leak.sweep.store import RESULTS_FILE, read_results

    rows: dict[str, dict] = {}
    for row in read_results(out / RESULTS_FILE):
        key = json.dumps(row["config"], sort_keys=True)
        assert key not in rows, f"recorded twice: {key}"
        rows[key] = without_timings(row)
    return rows


class HalfAttack(Attack):
    """Truth-free stub: every input value 0.5."""

    name = "stub-half"
    default_iterations = 1

    def reconstruct(self, obs: Observation) -> Reconstruction:
        self.report(1, 0.0)
        return Reconstruction(inputs=torch.full((obs.batch, *obs.input_shape), 0.5), iterations=1)


class CountingRunner:
    """A fake run_outcome: deterministic numbers from the config, no model, counts its calls."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[RunConfig] = []
        self.fail_on = fail_on

    def __call__(self, cfg: RunConfig, progress=None, key_seed=None) -> Outcome:
        self.calls.append(cfg)
        if progress is not None:
            progress(1, 1, 0.5)
        if self.fail_on is not None and cfg.index == self.fail_on:
            raise RuntimeError("diverged")
        psnr = 10.0 + 10 * cfg.index + (5.0 if cfg.attack == "stub-other" else 0.0)
        result = Result(
            scenario=cfg.scenario, encryptor=cfg.encryptor, model=cfg.model, attack=cfg.attack,
            data=cfg.data, index=cfg.index, seed=cfg.seed, batch=cfg.batch, device="cpu", seconds=0.01,
            plaintext_psnr=psnr, plaintext_ssim=psnr / 40, symbol_exact=1.0 if cfg.index else 0.5,
            decrypts=cfg.index > 0, success=psnr >= 30, config=cfg.key(),
        )  # fmt: skip
        truth = np.random.default_rng(cfg.index).random((cfg.batch, 1, 8, 8))
        return Outcome(result, {"truth": truth, "keyless": np.full_like(truth, 0.5)})


class KillingRunner:
    """The real runner, except that the run with index `victim` SIGKILLs its own worker process: once (a marker
    file records it), or every time with `always`. Picklable, so pool and Ray workers can use it."""

    def __init__(self, marker: Path, victim: int, *, always: bool = False) -> None:
        self.marker, self.victim, self.always = str(marker), victim, always

    def __call__(self, cfg: RunConfig, progress=None, key_seed=None) -> Outcome:
        if cfg.index == self.victim and (self.always or not os.path.exists(self.marker)):
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return run_outcome(cfg, progress=progress, key_seed=key_seed)


BASIC = """
name = "basic"
description = "two attacks on three images"

[fixed]
model = "mlp"
hidden = [8]

[[grid]]
scenario = ["plain"]
attack = ["stub-half", "stub-other"]
index = [0, 1, 2]

[[grid]]
scenario = ["plain"]
attack = ["stub-half"]
index = [2, 3]

[[expect]]
attack = "stub-other"
metric = "plaintext_psnr"
min = 20

[[expect]]
metric = "success"
aggregate = "rate"
min = 0.4
note = "at least 40% of the runs succeed"
"""


PLOTS = """
[fixed]
model = "mlp"

[[grid]]
attack = ["stub-half", "stub-other"]
index = [0, 1, 2]
hidden = [[4], [8]]

[[plot]]
x = "config.index"
y = "plaintext_psnr"
group = "attack"
aggregate = "mean"
title = "psnr by index"

[[plot]]
name = "scatter"
kind = "scatter"
x = "plaintext_ssim"
y = "plaintext_psnr / index"
attack = "stub-other"

[[plot]]
name = "by_hidden"
x = "config.hidden"
y = "symbol_exact"
"""


def experiment_script(name: str):
    """A script of experiments/ (e.g. "fedavg_table") imported as a module, for tests of its functions."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
