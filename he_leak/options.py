"""The one table of run options: for every RunConfig field, the flag that sets it and who uses it — which
scenarios, attacks and models read it, and under which condition. An option that the run's scenario, attack or
model does not use is refused in one line naming it (he_leak.validation), whether it came from the command line, an
experiment file or the library, and also when it is given at its default value: nothing is silently ignored.

Adding an option: add the RunConfig field, its flag in he_leak/cli/parser.py and one row here naming who reads it
(None: every scenario / attack / model). tests/test_options.py checks that every field has a row and that every
name in the table is registered."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Unused = Callable[[Any], str | None]  # a RunConfig → why the option is unused there ("with --x ..."), or None


@dataclass(frozen=True)
class Option:
    """Who uses one RunConfig field. `scenarios` / `attacks` / `models`: the registered names that read it (None:
    every one); `unused`: a further condition on the whole config (None: always used by those)."""

    flag: str
    scenarios: tuple[str, ...] | None = None
    attacks: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None
    unused: Unused | None = None


def is_user_path(data: str) -> bool:
    """Whether `--data` names a user's file or folder rather than a built-in dataset (he_leak.data.load_dataset)."""
    return "/" in data or "." in data or Path(data).exists()


def _not_an_array(cfg: Any) -> str | None:
    if not is_user_path(cfg.data):
        return f"to the built-in dataset {cfg.data} (only to a user's .npy/.npz array)"
    if Path(cfg.data).suffix.lower() not in (".npy", ".npz"):
        return f"to {cfg.data} (only to a .npy/.npz array; image files are read as H×W(×C))"
    return None


def _built_in(cfg: Any) -> str | None:
    return None if is_user_path(cfg.data) else f"to the built-in dataset {cfg.data} (it lies in [0, 1] already)"


def _layers_chosen(cfg: Any) -> str | None:
    return "with --encrypt-layers (whole layers are encrypted by name)" if cfg.encrypt_layers else None


def _nothing_to_choose(cfg: Any) -> str | None:
    if cfg.encrypt_layers:
        return _layers_chosen(cfg)
    if not 0 < cfg.encrypt_fraction < 1:
        return f"with --encrypt-fraction {cfg.encrypt_fraction:g} (every entry is treated alike: nothing to choose)"
    return None


def _nothing_encrypted(cfg: Any) -> str | None:
    if cfg.scenario == "he-aggregate" and not cfg.encrypt_layers and cfg.encrypt_fraction == 0:
        return "with --encrypt-fraction 0 (nothing is encrypted)"
    return None


def _no_key_recovery(cfg: Any) -> str | None:
    return None if cfg.key_recovery else "without --key-recovery (nobody attacks what is disclosed)"


def _no_dp_sgd(cfg: Any) -> str | None:
    return None if cfg.dp_noise is not None else "without --dp-noise (it is DP-SGD's per-sample bound)"


def _no_sensitivity_map(cfg: Any) -> str | None:
    if reason := _nothing_to_choose(cfg):
        return reason
    return None if cfg.select == "sensitivity" else f"with --select {cfg.select} (no sensitivity map is computed)"


HE = ("ckks-input", "he-train", "he-aggregate")
DP_SGD = ("plain", "ckks-input", "he-aggregate", "secagg")  # a client computes its own gradient (scenarios.dp_sgd)
MATCHING = ("dlg", "idlg", "ig")  # the gradient-matching attacks: restarts
CONV = ("convnet", "conv1")
ACTIVATED = ("lenet", "lenet-bn", "mlp", "convnet", "conv1", "resnet18", "resnet18-bn")  # logreg has none
LOCAL = ("plain", "he-aggregate", "he-train")  # FedAvg local steps (he-train refuses E > 1 itself)

OPTIONS: dict[str, Option] = {
    "scenario": Option("--scenario"),
    "attack": Option("--attack"),
    "model": Option("--model"),
    "data": Option("--data"),
    "index": Option("--index"),
    "seed": Option("--seed"),
    "batch": Option("--batch"),
    "iterations": Option("--iterations", attacks=(*MATCHING, "analytic")),  # analytic: solver evaluations
    "restarts": Option("--restarts", attacks=MATCHING),
    "classes": Option("--classes"),
    "device": Option("--device"),  # every run resolves it, records it and is scheduled by it
    "hidden": Option("--hidden", models=("mlp",)),
    "width": Option("--width", models=CONV),
    "stride": Option("--stride", models=("conv1",)),
    "activation": Option("--activation", models=ACTIVATED),
    "encryptor": Option("--encryptor", scenarios=("ckks-input",)),
    "encryptor_params": Option("--he", scenarios=HE, unused=_nothing_encrypted),
    "insecure": Option("--insecure", scenarios=("ckks-input",)),
    "loss": Option("--loss"),
    "success_psnr": Option("success_psnr"),  # every scenario's per-sample recovery rule
    "lr": Option("--lr", attacks=("ig",)),
    "tv": Option("--tv", attacks=("ig",)),
    "layout": Option("--layout", unused=_not_an_array),
    "normalize": Option("--normalize", unused=_built_in),
    "utility": Option("--utility"),
    "clip": Option("--clip"),
    "prune": Option("--prune"),
    "noise": Option("--noise"),
    "train_steps": Option("--train-steps", scenarios=("he-train",)),
    "flood_bits": Option("--flood-bits", scenarios=("he-train",)),
    "disclosure": Option("--disclosure", scenarios=("he-train",), unused=_no_key_recovery),
    "key_recovery": Option("--key-recovery", scenarios=("he-train",)),
    "dp_noise": Option("--dp-noise", scenarios=DP_SGD),
    "dp_clip": Option("--dp-clip", scenarios=DP_SGD, unused=_no_dp_sgd),
    "clients": Option("--clients", scenarios=("he-aggregate", "secagg")),
    "role": Option("--role", scenarios=("he-aggregate",)),
    "encrypt_fraction": Option("--encrypt-fraction", scenarios=("he-aggregate",), unused=_layers_chosen),
    "select": Option("--select", scenarios=("he-aggregate",), unused=_nothing_to_choose),
    "encrypt_layers": Option("--encrypt-layers", scenarios=("he-aggregate",)),
    "sensitivity": Option("--sensitivity", scenarios=("he-aggregate",), unused=_no_sensitivity_map),
    "sensitivity_samples": Option("--sensitivity-samples", scenarios=("he-aggregate",), unused=_no_sensitivity_map),
    "weights": Option("--weights"),
    "pretrain_epochs": Option("--pretrain-epochs"),
    "model_mode": Option("--model-mode"),
    "local_steps": Option("--local-steps", scenarios=LOCAL),
    "local_lr": Option("--local-lr", scenarios=LOCAL),
    "local_batch": Option("--local-batch", scenarios=LOCAL),
    "update": Option("--update", scenarios=("plain",)),
    "update_kind": Option("--update-kind", scenarios=("plain",)),
    "update_truth": Option("--truth", scenarios=("plain",)),
    "unroll": Option("--no-unroll", attacks=MATCHING),
    "bn_prior": Option("--bn-prior", attacks=("ig",)),
    "he_backend": Option("--he-backend", scenarios=("he-aggregate",), unused=_nothing_encrypted),
    "imprint": Option("--imprint", scenarios=("he-aggregate",)),
}  # fmt: skip


def why_unused(name: str, cfg: Any) -> str | None:
    """Why option `name` has no effect on the run `cfg` ("to attack dlg; ..."), or None when the run uses it."""
    option = OPTIONS[name]
    for kind, users in (("scenario", option.scenarios), ("attack", option.attacks), ("model", option.models)):
        value = getattr(cfg, kind)
        if users is not None and value not in users:
            return f"to {kind} {value} (only {', '.join(users)} {'uses' if len(users) == 1 else 'use'} it)"
    return option.unused(cfg) if option.unused is not None else None
