"""Checks before the first run of a sweep, so that a bad grid point fails in one line before anything runs or is
written, not hours later when the sweep reaches it: the output folder, every run's data, index, batch and labels,
its device, and the HE parameters of every distinct encryptor setting (built once, cheaply). Numeric ranges and
names are checked when the experiment file is loaded (RunConfig, he_leak.sweep.experiment)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from he_leak.config import RunConfig
from he_leak.errors import ConfigError, HeLeakError
from he_leak.sweep.experiment import Experiment
from he_leak.text import describe_run, one_line

HE_ERRORS = (HeLeakError, ValueError, TypeError, OverflowError)  # what a bad parameter value makes an encryptor raise


def check_output(out: Path) -> None:
    """The output folder exists and takes a file, or can be created: probed by creating what is missing and a file in
    it, then removing what the probe made, so nothing is left behind (else one line naming the real cause)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; give a folder (existing or new)")
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"--out {out}: {parent} is not a folder, so the folder cannot be created; give another path")
    made: list[Path] = []
    try:
        for folder in reversed([out, *out.parents][: len(out.relative_to(parent).parts)]):
            folder.mkdir()
            made.append(folder)
        probe = out / f".he-leak-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot create it or write there ({one_line(e)}); give a folder you can "
                          f"write") from None  # fmt: skip
    finally:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()


def check_runs(experiment: Experiment, *, devices: bool = True) -> None:
    """Every run's data (index, batch, labels), device (when `devices`: runs execute on this machine) and HE
    parameters, before any run starts. Raises a one-line HeLeakError naming the file and the grid point."""
    shapes = _check_data(experiment)
    if devices:
        _check_devices(experiment)
    _check_encryptors(experiment, shapes)


def _check_data(experiment: Experiment) -> dict[str, tuple[int, ...]]:
    """Sample index / batch / label ranges (as the runner reads the data); returns each data setting's image shape."""
    from he_leak.data import check_labels, load_dataset
    from he_leak.scenarios import SCENARIOS

    shapes = {}
    for key in dict.fromkeys((cfg.data, cfg.layout, cfg.normalize) for cfg in experiment.runs):
        data, layout, normalize = key
        try:
            ds = load_dataset(data, layout=layout, normalize=normalize)
        except HeLeakError as e:
            raise type(e)(f"{experiment.path}: data {data!r}: {one_line(e)}") from None
        shapes[data] = tuple(ds.shape)
        for cfg in (c for c in experiment.runs if (c.data, c.layout, c.normalize) == key):
            try:
                scenario = SCENARIOS[cfg.scenario](cfg)
                ds.indices(cfg.index, scenario.samples, asked=scenario.samples_asked)
                check_labels(ds.labels, cfg.classes, where=data)
            except HeLeakError as e:
                raise ConfigError(f"{experiment.path}: {one_line(e)} (run {describe_run(cfg)})") from None
    return shapes


def _check_devices(experiment: Experiment) -> None:
    cuda = [cfg for cfg in experiment.runs if cfg.device == "cuda"]
    if not cuda:
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f'{experiment.path}: {len(cuda)} run(s) ask for device = "cuda" (first: '
                          f'{describe_run(cuda[0])}) but no CUDA device is available here; use device = "auto" '
                          f'or "cpu"')  # fmt: skip


# RunConfig fields that do not change what a scenario builds (attack settings, replicates, bookkeeping)
NOT_SCENARIO = ("attack", "index", "seed", "iterations", "restarts", "lr", "tv", "device", "utility", "success_psnr",
                "unroll", "bn_prior")


def _check_encryptors(experiment: Experiment, shapes: dict[str, tuple[int, ...]]) -> None:
    """Build each distinct scenario setting once (its options, loss, HE parameters, keys and model checks) on the
    first run that uses it, so that a bad HE parameter or an unsupported model fails before anything runs."""
    from he_leak.models import build_model
    from he_leak.models.user import is_user_model
    from he_leak.scenarios import SCENARIOS, model_spec

    groups: dict[str, RunConfig] = {}
    for cfg in experiment.runs:
        key = json.dumps({k: v for k, v in cfg.key().items() if k not in NOT_SCENARIO}, sort_keys=True, default=str)
        groups.setdefault(key, cfg)
    for cfg in groups.values():
        try:
            scenario = SCENARIOS[cfg.scenario](cfg)
            spec = model_spec(cfg, scenario.input_shape(shapes[cfg.data]))
            if is_user_model(cfg.model) or cfg.weights is not None:  # the factory runs, the weights fit
                build_model(spec)
            scenario.check(spec)
        except HE_ERRORS as e:
            kind = type(e) if isinstance(e, ConfigError) else ConfigError  # keeps ParameterError
            raise kind(f"{experiment.path}: run {describe_run(cfg)} is refused: {one_line(e)}; fix it in the "
                       f"file") from None  # fmt: skip
