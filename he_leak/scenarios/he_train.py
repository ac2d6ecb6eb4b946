"""Scenario `he-train`: the forward and backward pass run homomorphically on the encrypted input and one-hot label,
with plaintext weights (the seed question's own setting; TenSEAL's encrypted logistic-regression tutorial).

The client encrypts each sample (CKKS, replicated slot layout) and its one-hot label; the server evaluates the
program of he_leak.scenarios.he_program with the plaintext weights (encryptors.circuit's evaluator: no secret key)
and sums the per-sample gradients; the key holder decrypts the sum, divides by B and applies the defences. The
weights are plaintext, so that decrypted update is what the server needs to train: the attacker is whoever sees it,
and attacks it in plaintext space (any registered attack). Parameters come from the circuit's depth: the smallest
128-bit-secure N and chain that fit (recorded in he_params, with the evaluator's operation counts `he_ops`).
`he_gradient_error` compares the shared gradient with torch's float64 gradient of the same model.

Handing over an exact CKKS decryption to whoever holds the ciphertexts is the IND-CPA-D setting (Li & Micciancio,
EUROCRYPT 2021): they can recover the secret key. `--flood-bits B` makes the key holder flood the decryption with
Gaussian noise of standard deviation 2**B in the coefficient domain first (encryptors.circuit); the ciphertext
noise it must dominate is recorded as `decryption_noise_bits`. `--key-recovery` runs that attack: the key holder
hands over `--disclosure` of each decryption (the entries by default) and the server tries to recover the secret key
from it and the ciphertexts it holds, then decrypts the client's inputs (he_leak.scenarios.he_keys; Result
`key_recovery`, and the inputs it read as a key holder's estimate). `--train-steps N` runs N more encrypted SGD
steps on the run's batch and records the loss beside the same steps trained in plaintext (he_training).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from encryptors.circuit import MAX_FLOOD_BITS, CkksCircuit, CtVector, plan_circuit
from encryptors.circuit_cost import CostOps
from encryptors.key_recovery import share
from he_leak.errors import ConfigError, ParameterError
from he_leak.models.losses import LOSSES
from he_leak.records import HeCost, Observation, Observed, Reconstruction, Truth
from he_leak.scenarios import he_keys
from he_leak.scenarios.base import SCENARIOS, Estimates, Pool, Scenario, shared_gradient
from he_leak.scenarios.he_program import backprop, batch_gradient, layers_of
from he_leak.seeds import derive

TRAIN_LR = 0.5  # plain SGD step of the short encrypted training loop
PLAINTEXT_EQUIVALENT = "plaintext-equivalent (trained in plaintext; HE gives the same gradient up to CKKS error)"


def reference_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, loss: str) -> list[torch.Tensor]:
    """torch's float64 batch-mean gradient of the same model and loss (the reference for he_gradient_error)."""
    net = copy.deepcopy(model).double()
    value = LOSSES[loss](net(images.double()), labels)
    return [g.detach() for g in torch.autograd.grad(value, list(net.parameters()))]


def relative_error(got: list[np.ndarray], want: list[torch.Tensor]) -> float:
    """max over tensors of max|got − want| / max|want| (relative to each tensor's largest entry)."""
    errors = []
    for g, w in zip(got, want, strict=True):
        w64 = w.numpy()
        errors.append(float(np.abs(g - w64).max() / max(np.abs(w64).max(), 1e-300)))
    return max(errors)


@dataclass(frozen=True)
class HeRound:
    """One encrypted gradient: the batch mean as shared (flooded when asked) and as decrypted exactly, per
    parameter; the ciphertext bytes sent; the evaluator's operation counts; each gradient ciphertext's level."""

    shared: list[np.ndarray]
    exact: list[np.ndarray]
    sent: int
    ops: dict[str, int]
    levels: list[int]
    vectors: tuple[CtVector, ...] = ()  # the gradient ciphertexts (what the server evaluated and holds)
    slots: tuple[list[np.ndarray], ...] = ()  # per gradient vector: every chunk's decoded slots, as the key holder
    inputs: tuple[tuple[CtVector, CtVector], ...] = ()  # the client's encrypted (x, one-hot y) the server holds


@SCENARIOS.register("he-train")
class HeTrain(Scenario):
    """Encrypted forward/backward with plaintext weights; the attacker sees the decrypted update."""

    name = "he-train"
    encryptor = "ckks"
    default_loss = "mse"
    default_activation = "square"
    losses = ("mse", "poly-sigmoid")

    def __init__(self, cfg, *, key_seed=None) -> None:
        super().__init__(cfg, key_seed=key_seed)
        if cfg.local_steps > 1 or (cfg.local_batch or cfg.batch) != cfg.batch:
            raise ConfigError(f"he-train: --local-steps {cfg.local_steps} of {cfg.local_batch or cfg.batch} samples: "
                              "each local step needs the decrypted gradient to update the plaintext weights, so the "
                              "attacker sees every step's gradient on its own; use --local-steps 1 on the whole batch "
                              "(steps under HE would need encrypted weights, a circuit E times as deep)")  # fmt: skip
        if cfg.flood_bits is not None and cfg.flood_bits > MAX_FLOOD_BITS:
            raise ParameterError(f"--flood-bits {cfg.flood_bits}: at most {MAX_FLOOD_BITS} (the noise must stay far "
                                 f"below the last prime of the chain)")  # fmt: skip
        if cfg.key_recovery and self.defences:
            raise ConfigError("--key-recovery models the key holder handing over the decryption itself; drop "
                              "--clip/--prune/--noise (--flood-bits is the decryption-side noise)")
        self.server_key: he_keys.ServerKey | None = None

    @property
    def utility_measured(self) -> str:
        flood = f", with the slot-domain equivalent of flooding 2^{self.cfg.flood_bits}" if self.cfg.flood_bits else ""
        return PLAINTEXT_EQUIVALENT[:-1] + flood + ")"

    def input_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        self.insecure = False
        return tuple(image_shape)

    def check(self, spec) -> None:
        from he_leak.models import build_model

        layers_of(build_model(spec))

    def _circuit(self, model: nn.Module, sample: np.ndarray) -> tuple[CkksCircuit, int, float]:
        """Plan the parameters from the program's depth (traced on ciphertext shapes), then make the keys (timed)."""
        layers = layers_of(model)
        widths = [sample.size, self.cfg.classes] + [layer.weight.shape[0] for layer in layers]
        period = 1 << max(0, math.ceil(math.log2(max(widths))))
        tracer = CostOps(slots=period)
        backprop(tracer, layers, tracer.leaf(sample.size, period), tracer.leaf(self.cfg.classes, period),
                 loss=self.loss)  # fmt: skip
        unknown = sorted(set(self.cfg.encryptor_params) - {"scale_bits"})
        if unknown:
            raise ConfigError(f"he-train takes --he scale_bits=<20..59> only (the rest follows from the circuit's "
                              f"depth), not {', '.join(unknown)}")  # fmt: skip
        scale_bits = self.cfg.encryptor_params.get("scale_bits", 40)
        if isinstance(scale_bits, bool) or not isinstance(scale_bits, int):
            raise ConfigError(f"--he scale_bits must be an integer, got {scale_bits!r}")
        plan = plan_circuit(depth=tracer.depth, slots=period, scale_bits=scale_bits)
        start = time.perf_counter()
        circuit = CkksCircuit(plan, key_seed=self.key_seed, periods=(period,))
        return circuit, period, time.perf_counter() - start

    def encrypted_gradient(self, circuit: CkksCircuit, period: int, model: nn.Module, images: torch.Tensor,
                           labels: torch.Tensor) -> HeRound:  # fmt: skip
        """The batch-mean gradient computed homomorphically, decrypted by the key holder (flooded with
        --flood-bits), with the bytes sent and the evaluator's operation counts."""
        layers = layers_of(model)
        ev = circuit.evaluator(seed=derive(self.cfg.seed, "server"))
        pairs = [(circuit.encrypt(x.double().flatten().numpy(), period=period),
                  circuit.encrypt(np.eye(self.cfg.classes)[int(y)], period=period))
                 for x, y in zip(images, labels, strict=True)]  # fmt: skip
        sent = sum(ev.ciphertext_bytes(c) for pair in pairs for c in pair)
        total = batch_gradient(ev, layers, [p[0] for p in pairs], [p[1] for p in pairs], loss=self.loss)
        sent += sum(ev.ciphertext_bytes(c) for c in total)
        shapes = [p.shape for layer in layers for p in (layer.weight, layer.bias)]

        def mean(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
            return values[tuple(slice(0, n) for n in shape)] / len(images)

        flood = self.cfg.flood_bits
        slots = tuple(circuit.decrypt_slots(c, flood_bits=flood) for c in total)
        shared = [mean(c.layout.unpack([v.real for v in chunks]), s)
                  for c, chunks, s in zip(total, slots, shapes, strict=True)]  # fmt: skip
        exact = shared if flood is None else [mean(circuit.decrypt(c), s) for c, s in zip(total, shapes, strict=True)]
        return HeRound(shared, exact, sent, dict(sorted(ev.ops.items())), [c.level for c in total], tuple(total),
                       slots, tuple(pairs))  # fmt: skip

    def observe(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Observed:
        circuit, period, keygen = self._circuit(model, images[0].double().flatten().numpy())
        start = time.perf_counter()
        he = self.encrypted_gradient(circuit, period, model, images, labels)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        shared_gradient(model, images, labels, loss=self.loss)  # the same gradient in plaintext, for the ratio
        plain_seconds = time.perf_counter() - start
        reference = reference_gradient(model, images, labels, self.loss)
        scales = [circuit.scales[level] for level in he.levels]
        flood = self.cfg.flood_bits
        self.flood_std = None if flood is None else [circuit.flood_slot_std(flood, lv) for lv in he.levels]
        self.params = {
            **circuit.plan.describe(), "period": period, "keygen_seconds": keygen,
            "plaintext_gradient_seconds": plain_seconds, "he_ops": he.ops, "flood_bits": flood,
            "decryption_noise_bits": noise_bits(he.exact, reference, scales, batch=len(images),
                                                degree=circuit.plan.poly_modulus_degree),
            "he_gradient_error_exact": relative_error(he.exact, reference),
            "flood_std": None if flood is None else max(self.flood_std) / len(images),
        }  # fmt: skip
        params = list(model.parameters())
        decrypted = tuple(torch.from_numpy(g).to(p.dtype).reshape(p.shape) for g, p in zip(he.shared, params,
                                                                                            strict=True))  # fmt: skip
        error = relative_error(he.shared, reference)
        key_bytes = circuit.evaluator(seed=derive(self.cfg.seed, "server")).key_bytes()
        training = self.train(circuit, period, model, images, labels) if self.cfg.train_steps else None
        cost = HeCost(seconds=seconds, bytes=he.sent, key_bytes=key_bytes, gradient_error=error, training=training)
        # one local SGD step (--local-steps 1): the update −Δ/η is the decrypted gradient itself
        obs = Observation(model=model, gradients=self.share(decrypted), input_shape=tuple(images.shape[1:]),
                          batch=len(images), classes=self.cfg.classes, loss=self.loss,
                          local=self.cfg.local())  # fmt: skip
        fields = {"key_recovery": self.recover_key(circuit, he, images, labels)} if self.cfg.key_recovery else {}
        return Observed(obs, Truth(inputs=images, labels=labels, plaintext=images), cost, fields)

    def recover_key(self, circuit: CkksCircuit, he: HeRound, images: torch.Tensor,
                    labels: torch.Tensor) -> dict[str, object]:  # fmt: skip
        """--key-recovery: the key holder hands over --disclosure of each decrypted gradient vector (the batch
        mean); the server attacks what it holds (he_leak.scenarios.he_keys); scored against the truth."""
        batch, how = len(images), self.cfg.disclosure
        disclosed = [share(ct.layout, slots, how, batch=batch) for ct, slots in zip(he.vectors, he.slots,
                                                                                     strict=True)]  # fmt: skip
        public = circuit.evaluator(seed=derive(self.cfg.seed, "server")).keys.public
        self.server_key = he_keys.attack(circuit.context, public, he.vectors, disclosed, he.inputs,
                                         disclosure=how, batch=batch)  # fmt: skip
        return he_keys.score(circuit, self.server_key, images, labels)

    def train(self, circuit: CkksCircuit, period: int, model: nn.Module, images: torch.Tensor,
              labels: torch.Tensor) -> dict[str, object]:  # fmt: skip
        """`train_steps` SGD steps on encrypted gradients (as shared: flooded with --flood-bits) beside the same
        steps in plaintext (float64), from the run's weights, on the run's batch (the attacked round is step 0);
        losses before each step."""
        he_model, plain_model = copy.deepcopy(model).double(), copy.deepcopy(model).double()
        objective = LOSSES[self.loss]
        losses_he, losses_plain = [], []
        for _ in range(self.cfg.train_steps):
            with torch.no_grad():
                losses_he.append(float(objective(he_model(images.double()), labels)))
                losses_plain.append(float(objective(plain_model(images.double()), labels)))
            grads = self.encrypted_gradient(circuit, period, he_model, images, labels).shared
            reference = reference_gradient(plain_model, images, labels, self.loss)
            with torch.no_grad():
                for p, g in zip(he_model.parameters(), grads, strict=True):
                    p -= TRAIN_LR * torch.from_numpy(g).reshape(p.shape)
                for p, g in zip(plain_model.parameters(), reference, strict=True):
                    p -= TRAIN_LR * g
        gap = max(float((a - b).detach().abs().max()) for a, b in zip(he_model.parameters(), plain_model.parameters(),
                                                              strict=True))  # fmt: skip
        return {"lr": TRAIN_LR, "loss_he": losses_he, "loss_plain": losses_plain, "max_weight_gap": gap}

    def training_update(self, grads: tuple[torch.Tensor, ...], *, batch: int, seed: int) -> tuple[torch.Tensor, ...]:
        """With --flood-bits, the flooding's slot-domain equivalent first (iid Gaussian, per tensor the standard
        deviation of its ciphertext's level over the batch size), then the defences, as in observe."""
        if self.cfg.flood_bits is not None:
            if getattr(self, "flood_std", None) is None:
                raise ConfigError("he-train: observe() must run before the utility training (it plans the circuit)")
            gen = torch.Generator().manual_seed(derive(seed, "flood"))
            grads = tuple(g + torch.randn(g.shape, generator=gen, dtype=g.dtype) * (std / batch)
                          for g, std in zip(grads, self.flood_std, strict=True))  # fmt: skip
        return super().training_update(grads, batch=batch, seed=seed)

    def he_params(self) -> dict[str, object] | None:
        return getattr(self, "params", None)

    def interpret(self, rec: Reconstruction, truth: Truth, labels: np.ndarray | None, pool: Pool) -> Estimates:
        """The gradient attacker's estimate; with --key-recovery and a key, the inputs the server decrypted with it
        (scored as a key holder's estimate)."""
        read = None if self.server_key is None else self.server_key.inputs
        with_key = None if read is None else torch.from_numpy(read).reshape(truth.plaintext.shape)
        return Estimates(keyless=rec.inputs.reshape(truth.plaintext.shape), with_key=with_key)


def noise_bits(exact: list[np.ndarray], reference: list[torch.Tensor], scales: list[float], *, batch: int,
               degree: int) -> float:  # fmt: skip
    """log2 of the CKKS decryption noise in the coefficient domain, estimated from the exact decryption's error
    against torch (largest over tensors of rms(error of the sum)·Δ/√(N/2): the inverse of flood_slot_std's map)."""
    rms = [float(np.sqrt(np.mean(((e - r.numpy()) * batch) ** 2))) * s / math.sqrt(degree / 2)
           for e, r, s in zip(exact, reference, scales, strict=True)]  # fmt: skip
    return math.log2(max(max(rms), 1e-300))
