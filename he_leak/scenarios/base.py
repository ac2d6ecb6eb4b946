"""The scenario interface: who sees which gradient, and what the truth is to score against."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from he_leak.config import RunConfig
from he_leak.data import Dataset
from he_leak.data.prior import Prior
from he_leak.errors import ConfigError
from he_leak.models import ModelSpec
from he_leak.models.local import client_update, running_buffers
from he_leak.models.losses import LOSSES
from he_leak.records import Observed, Reconstruction, SharedBuffers, Truth
from he_leak.registry import Registry
from he_leak.scenarios import defences, dp_sgd
from he_leak.seeds import KeySeed

SCENARIOS: Registry = Registry("scenario")


@dataclass(frozen=True)
class Estimates:
    """Plaintext images estimated from a Reconstruction (B×C×H×W), by the attacker and by a key holder."""

    keyless: torch.Tensor | None  # the attacker's own best estimate of the plaintext
    with_key: torch.Tensor | None = None  # a key holder's decryption of the recovered input
    decrypts: torch.Tensor | None = None  # per sample: did the recovered input decrypt at all
    by_learner: dict[str, torch.Tensor] = field(default_factory=dict)  # every keyless learner's estimate
    chosen: str | None = None  # the learner the attacker picked (by its own validation error)


@dataclass(frozen=True)
class Pool:
    """The attacker's public data: the dataset without the attacked samples (`targets` are left out of anything the
    attacker fits) and the label-aware prior computed on it."""

    dataset: Dataset
    targets: np.ndarray
    prior: Prior

    @property
    def others(self) -> np.ndarray:
        """Indices of the dataset's samples other than the attacked ones."""
        return np.setdiff1d(np.arange(len(self.dataset)), self.targets)


@dataclass(frozen=True)
class SampleScores:
    """One matched sample's scores, for the scenario's per-sample recovery rule."""

    plaintext_psnr: float | None  # the attacker's keyless estimate vs the plaintext
    view_exact: bool | None = None  # quantised views: every symbol of the recovered view is right
    decrypts: bool | None = None
    key_psnr: float | None = None  # the key holder's decryption vs the plaintext
    key_error: float | None = None  # its largest absolute error


class Scenario(ABC):
    """Turns a batch of images into what the attacker observes, and a reconstruction back into plaintext."""

    name: str = "scenario"
    encryptor: str | None = None
    insecure: bool | None = None
    default_loss: str = "cross-entropy"
    default_activation: str = "sigmoid"  # the model's activation when the run names none (RunConfig.activation None)
    # how `utility` is measured under this protection (Result.utility_measured)
    utility_measured: str = "plaintext"
    per_client = False  # True: each of --clients K draws its own batch (he-aggregate, secagg)
    losses: tuple[str, ...] = ("cross-entropy", "mse", "poly-sigmoid")  # the losses this scenario can train with

    def __init__(self, cfg: RunConfig, *, key_seed: KeySeed | None = None) -> None:
        """`key_seed`: the key holder's secret (he_leak.seeds.KeySeed) from the runner, never from `cfg`; None: fresh
        OS randomness (e.g. a scenario built only to check its options)."""
        self.cfg = cfg
        self.key_seed = KeySeed.fresh() if key_seed is None else KeySeed.check(key_seed, f"scenario {self.name}")
        self.loss = cfg.loss or self.default_loss
        LOSSES[self.loss]  # unknown names fail here, before any work
        if self.loss not in self.losses:
            raise ConfigError(f"scenario {self.name} cannot train with the {self.loss} loss; use --loss "
                              f"{' or '.join(self.losses)}")  # fmt: skip
        if "insecure" in cfg.encryptor_params:
            raise ConfigError("set insecure parameters with --insecure (insecure = true in a TOML), not --he insecure")
        if cfg.dp_noise is not None and self.defences:
            raise ConfigError("DP-SGD (--dp-noise) clips and noises each sample's gradient itself; drop "
                              "--clip/--prune/--noise")

    @property
    def samples(self) -> int:
        """How many dataset samples one run draws (one batch per client where the scenario has clients)."""
        return self.cfg.batch * (self.cfg.clients if self.per_client else 1)

    @property
    def samples_asked(self) -> str:
        """The options that set `samples`, as the user gave them (for errors)."""
        return (f"--clients {self.cfg.clients} × " if self.per_client else "") + f"--batch {self.cfg.batch}"

    def check(self, spec) -> None:
        """Cheap checks of the model this scenario will run (before a sweep starts); ConfigError when unusable."""
        return None

    def client_share(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                     client: int = 0) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:  # fmt: skip
        """What client `client` shares from its batch: its update (one gradient, or −Δ/(E·η) after the run's local
        training; he_leak.models.local) with the defences applied, and its BatchNorm running buffers (train mode).
        With --dp-noise: one DP-SGD step's gradient (`client_gradient`; RunConfig refuses local steps with it)."""
        if self.cfg.dp_noise is not None:
            return self.share(self.client_gradient(model, images, labels, client=client), client=client), {}
        update, buffers = client_update(model, images, labels, loss=self.loss, local=self.cfg.local())
        return self.share(update, client=client), buffers

    def decoder_samples(self, image_shape: tuple[int, ...]) -> int:
        """How many chosen plaintexts the attacker's keyless decoder encrypts (for the memory estimate); 0: none."""
        return 0

    @property
    def defences(self) -> dict[str, float]:
        """The gradient defences this run applies (clip, prune, noise), in order."""
        return defences.active({"clip": self.cfg.clip, "prune": self.cfg.prune, "noise": self.cfg.noise})

    def client_gradient(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *,
                        client: int = 0) -> tuple[torch.Tensor, ...]:  # fmt: skip
        """What a client computes of its batch: the batch-mean gradient, or with --dp-noise one DP-SGD step's
        (he_leak.scenarios.dp_sgd), whose noise is the client's secret (a child of the key seed)."""
        if self.cfg.dp_noise is None:
            return shared_gradient(model, inputs, labels, loss=self.loss)
        gen = torch.Generator().manual_seed(self.key_seed.child("client", client, "dp-sgd").entropy() % 2**63)
        return dp_sgd.dp_gradient(model, inputs, labels, loss=self.loss, noise_multiplier=self.cfg.dp_noise,
                                  max_grad_norm=self.cfg.dp_clip, generator=gen)  # fmt: skip

    def share(self, grads: tuple[torch.Tensor, ...], *, client: int = 0) -> tuple[torch.Tensor, ...]:
        """What a client shares of its gradient: the configured defences applied. The noise is the client's secret
        (a child of the run's key seed): drawn from the public run seed, an attacker could redraw and subtract it."""
        noise_seed = self.key_seed.child("client", client, "defence").entropy() % 2**63
        return defences.apply(grads, self.defences, seed=noise_seed)

    def training_update(self, grads: tuple[torch.Tensor, ...], *, batch: int, seed: int) -> tuple[torch.Tensor, ...]:
        """A mini-batch gradient of the utility training (he_leak.scoring.utility_accuracy) as this protection changes
        it before the update: the configured defences (``seed`` drives their noise)."""
        return defences.apply(grads, self.defences, seed=seed) if self.defences else grads

    def training_inputs(self, images: np.ndarray) -> tuple[torch.Tensor, tuple[int, ...]]:
        """The model inputs of a whole dataset (N × input_shape, indexable by a LongTensor) and their shape, for the
        utility measurement; plaintext images by default."""
        return torch.from_numpy(images), tuple(images.shape[1:])

    def he_params(self) -> dict[str, object] | None:
        """The HE parameters used (for the Result), None without HE."""
        return None

    @property
    def key_source(self) -> str | None:
        """Where the client's secret (keys, encryption randomness, defence or DP-SGD noise, masks) came from (os,
        given, sweep) for the Result; None when the run uses no secret (no encryptor, no noise)."""
        secret = self.encryptor is not None or "noise" in self.defences or self.cfg.dp_noise is not None
        return self.key_seed.source if secret else None

    @abstractmethod
    def input_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one model input for images of `image_shape`."""

    @abstractmethod
    def observe(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Observed:
        """The attacker's Observation, the Truth kept aside for scoring and what the HE work cost."""

    @abstractmethod
    def interpret(self, rec: Reconstruction, truth: Truth, labels: np.ndarray | None, pool: Pool) -> Estimates:
        """Plaintext estimates from the reconstructed inputs and the labels the attacker recovered (None: none),
        with the attacker's public data (`pool`); the Truth only supplies image shapes and key-holder data."""

    def recovered(self, sample: SampleScores) -> bool:
        """Per-sample recovery (DESIGN.md): the attacker's plaintext estimate reaches success_psnr."""
        return sample.plaintext_psnr is not None and sample.plaintext_psnr >= self.cfg.success_psnr

    def panels(self, rec: Reconstruction, truth: Truth) -> dict[str, np.ndarray]:
        """Extra images (B×C×H×W in [0,1]) for figures, e.g. ciphertext views drawn as images."""
        return {}


def model_spec(cfg: RunConfig, input_shape: tuple[int, ...]) -> ModelSpec:
    """The run's model from its config (the one place a ModelSpec is made from a RunConfig): no activation named
    means the scenario's default (square for he-train, sigmoid otherwise). A user's model (module:factory) takes
    none of the registered models' architecture options: RunConfig refuses them (he_leak.options)."""
    activation = cfg.activation or SCENARIOS[cfg.scenario].default_activation
    return ModelSpec(name=cfg.model, input_shape=tuple(input_shape), classes=cfg.classes, hidden=cfg.hidden,
                     width=cfg.width, stride=cfg.stride, activation=activation, seed=cfg.seed, weights=cfg.weights,
                     mode=cfg.model_mode)  # fmt: skip


def shared_buffers(model: nn.Module, after: dict[str, torch.Tensor]) -> SharedBuffers | None:
    """The running statistics that travel with an update (None when the client shares none): the global model's
    before the round and the client's `after` it."""
    return SharedBuffers(running_buffers(model), dict(after)) if after else None


def shared_gradient(
    model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *, loss: str = "cross-entropy"
) -> tuple[torch.Tensor, ...]:
    """The batch-mean gradient of `loss` (he_leak.models.losses), one tensor per parameter (what a client computes;
    the model's running buffers are left as they were)."""
    return client_update(model, inputs, labels, loss=loss)[0]
