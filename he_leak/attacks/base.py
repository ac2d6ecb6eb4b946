"""The attack interface: reconstruct model inputs from an Observation. An attack never sees Truth or a key."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from he_leak.errors import AttackFailed, ConfigError
from he_leak.records import Observation, Reconstruction
from he_leak.registry import Registry

ATTACKS: Registry = Registry("attack")
Progress = Callable[[int, int, float], None]  # (step, total, loss) -> None


@dataclass(frozen=True, kw_only=True)
class AttackOptions:
    """Options shared by all attacks; None means the attack's own default."""

    iterations: int | None = None
    restarts: int = 1
    lr: float | None = None
    tv: float | None = None
    seed: int = 0
    # The optimisation attacks' attacker-side stop (dlg, idlg): RMS change of the inputs per step, relative to the
    # box range, below which the run ends (see he_leak.attacks.optim.lbfgs_match.DEFAULT_X_TOL); 0 runs to tolerance.
    x_tol: float | None = None
    # dlg/idlg precision: None is the device's policy (he_leak.attacks.dlg.DeepLeakage.dtype: float64 on CPU, float32
    # escalated to float64 on CUDA); torch.float32 runs float32 until it stalls, then float64.
    dtype: torch.dtype | None = None
    device: torch.device = torch.device("cpu")
    progress: Progress | None = None
    # FedAvg updates: simulate the client's local steps (dlg, idlg, ig), or match the update as one gradient
    unroll: bool = True
    bn_prior: float = 0.0  # ig: weight of the BatchNorm-statistics prior (he_leak.attacks.optim.unroll.bn_distance)


class Attack(ABC):
    """Base class: holds the options; subclasses implement `reconstruct`."""

    name: str = "attack"
    default_iterations: int = 0
    # True: `reconstruct_many` runs many observations through one batched objective and the attack draws nothing from
    # torch's global generator, so a sweep may group its runs (he_leak.sweep.worker.group_runs)
    batchable: bool = False

    def __init__(self, options: AttackOptions) -> None:
        self.options = options

    def check(self, obs: Observation) -> None:
        """Refuse, in one line naming the reason, observations this attack cannot invert (before it runs);
        subclasses add their own. Options the run's attack does not use are refused by RunConfig (he_leak.options)."""
        return None

    @property
    def iterations(self) -> int:
        return self.options.iterations if self.options.iterations is not None else self.default_iterations

    def report(self, step: int, loss: float) -> None:
        if self.options.progress is not None:
            self.options.progress(step, self.iterations, loss)

    @abstractmethod
    def reconstruct(self, obs: Observation) -> Reconstruction:
        """Candidate model inputs (B × input_shape) for what was observed."""

    def reconstruct_many(
        self, observations: Sequence[Observation], *, seeds: Sequence[int] | None = None
    ) -> list[Reconstruction | AttackFailed]:
        """`reconstruct` for each observation (with its own seed when `seeds` is given): its Reconstruction, or the
        AttackFailed it raised. Attacks that optimise many runs through one batched objective override this (and set
        `batchable`); the results match one by one."""
        out: list[Reconstruction | AttackFailed] = []
        for k, obs in enumerate(observations):
            attack = self if seeds is None else type(self)(dataclasses.replace(self.options, seed=seeds[k]))
            try:
                out.append(attack.reconstruct(obs))
            except AttackFailed as e:
                out.append(e)
        return out

    def __repr__(self) -> str:
        o = self.options
        return f"{self.name}(iterations={self.iterations}, restarts={o.restarts}, lr={o.lr}, device={o.device})"


def refuse_local_steps(attack: str, obs: Observation) -> None:
    """ConfigError for attacks that invert one gradient when the update is several local steps."""
    if obs.local is not None and obs.local.steps > 1:
        raise ConfigError(f"attack {attack} inverts one gradient; an update of {obs.local.steps} local steps is a sum "
                          "of gradients at different weights: use dlg, idlg or ig, which unroll the steps")  # fmt: skip


def first_weight_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The first Linear or convolution of `model` (module order) and its name; None when it has neither."""
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.modules.conv._ConvNd)), None)


def make_attack(name: str, options: AttackOptions) -> Attack:
    """The registered attack `name` (unknown names raise ConfigError listing the known ones)."""
    return ATTACKS[name](options)


def project(x: torch.Tensor, obs: Observation) -> torch.Tensor:
    """What the attacker knows about inputs: clamp to the box and, for quantised inputs, round to the grid."""
    x = x.clamp(*obs.bounds)
    if obs.quantum:
        x = torch.round(x / obs.quantum) * obs.quantum
    return x
