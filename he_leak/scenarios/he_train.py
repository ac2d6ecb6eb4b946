"""Scenario `he-train`: the forward and backward pass run homomorphically on the encrypted input and one-hot label,
with plaintext weights (the seed question's own setting; TenSEAL's encrypted logistic-regression tutorial).

The client encrypts each sample (CKKS, replicated slot layout) and its one-hot label; the server evaluates the
program of he_leak.scenarios.he_program with the plaintext weights (encryptors.circuit's evaluator: no secret key)
and sums the per-sample gradients; the key holder decrypts the sum, divides by B and applies the defences. The
weights are plaintext, so that decrypted update is what the server needs to train: the attacker is whoever sees it,
and attacks it in plaintext space (any registered attack). Parameters come from the circuit's depth: the smallest
128-bit-secure N and chain that fit (recorded in he_params). `he_gradient_error` compares the decrypted gradient
with torch's float64 gradient of the same model. `--train-steps N` runs N more encrypted SGD steps on the next
batches and records the loss beside the same steps trained in plaintext (he_training).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from encryptors.circuit import CkksCircuit, plan_circuit
from he_leak.errors import ConfigError
from he_leak.losses import LOSSES
from he_leak.records import Observation, Reconstruction, Truth
from he_leak.scenarios.base import SCENARIOS, Estimates, Scenario, shared_gradient
from he_leak.scenarios.he_program import PlainOps, backprop, layers_of
from he_leak.seeds import derive

TRAIN_LR = 0.5  # plain SGD step of the short encrypted training loop


def reference_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, loss: str) -> list[torch.Tensor]:
    """torch's float64 batch-mean gradient of the same model and loss (the reference for he_gradient_error)."""
    net = _double(model)
    value = LOSSES[loss](net(images.double()), labels)
    return [g.detach() for g in torch.autograd.grad(value, list(net.parameters()))]


def _double(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).double()


def relative_error(got: list[np.ndarray], want: list[torch.Tensor]) -> float:
    """max over tensors of max|got − want| / max|want| (relative to each tensor's largest entry)."""
    errors = []
    for g, w in zip(got, want, strict=True):
        w64 = w.numpy()
        errors.append(float(np.abs(g - w64).max() / max(np.abs(w64).max(), 1e-300)))
    return max(errors)


@SCENARIOS.register("he-train")
class HeTrain(Scenario):
    """Encrypted forward/backward with plaintext weights; the attacker sees the decrypted update."""

    name = "he-train"
    encryptor = "ckks"
    default_loss = "mse"
    losses = ("mse", "poly-sigmoid")
    options = frozenset({"encryptor_params", "train_steps"})

    def input_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        self.insecure = False
        return tuple(image_shape)

    def check(self, spec) -> None:
        from he_leak.models import build_model

        layers_of(build_model(spec))

    def _circuit(self, model: nn.Module, sample: np.ndarray) -> tuple[CkksCircuit, int, float]:
        """Plan the parameters from a float64 trace of the program, then make the keys (timed)."""
        layers = layers_of(model)
        widths = [sample.size, self.cfg.classes] + [layer.weight.shape[0] for layer in layers]
        period = 1 << max(0, math.ceil(math.log2(max(widths))))
        tracer = PlainOps()
        backprop(tracer, layers, tracer.leaf(sample), tracer.leaf(np.eye(self.cfg.classes)[0]), loss=self.loss)
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
                           labels: torch.Tensor) -> tuple[list[np.ndarray], int]:  # fmt: skip
        """The batch-mean gradient computed homomorphically (per parameter, float64) and the bytes sent."""
        layers = layers_of(model)
        ev = circuit.evaluator(seed=derive(self.cfg.seed, "server"))
        total, sent = None, 0
        for x, y in zip(images, labels, strict=True):
            cx = circuit.encrypt(x.double().flatten().numpy(), period=period)
            cy = circuit.encrypt(np.eye(self.cfg.classes)[int(y)], period=period)
            sent += ev.ciphertext_bytes(cx) + ev.ciphertext_bytes(cy)
            grads = backprop(ev, layers, cx, cy, loss=self.loss)
            flat = [part for pair in grads for part in pair]
            total = flat if total is None else [ev.add(a, b) for a, b in zip(total, flat, strict=True)]
        sent += sum(ev.ciphertext_bytes(c) for c in total)
        out = []
        for (gw, gb), layer in zip(zip(total[::2], total[1::2], strict=True), layers, strict=True):
            rows, cols = layer.weight.shape
            out.append(circuit.decrypt(gw)[:rows, :cols] / len(images))
            out.append(circuit.decrypt(gb)[:rows] / len(images))
        return out, sent

    def observe(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[Observation, Truth]:
        circuit, period, keygen = self._circuit(model, images[0].double().flatten().numpy())
        start = time.perf_counter()
        grads, sent = self.encrypted_gradient(circuit, period, model, images, labels)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        shared_gradient(model, images, labels, loss=self.loss)  # the same gradient in plaintext, for the ratio
        plain_seconds = time.perf_counter() - start
        reference = reference_gradient(model, images, labels, self.loss)
        error = relative_error(grads, reference)
        self.params = {**circuit.plan.describe(), "period": period, "keygen_seconds": keygen,
                       "plaintext_gradient_seconds": plain_seconds}  # fmt: skip
        params = list(model.parameters())
        decrypted = tuple(torch.from_numpy(g).to(p.dtype).reshape(p.shape) for g, p in zip(grads, params, strict=True))
        extras = {"result": {"he_seconds": seconds, "he_bytes": sent, "he_gradient_error": error}}
        if self.cfg.train_steps:
            extras["result"]["he_training"] = self.train(circuit, period, model, images, labels)
        obs = Observation(model=model, gradients=self.share(decrypted), input_shape=tuple(images.shape[1:]),
                          batch=len(images), classes=self.cfg.classes, loss=self.loss)  # fmt: skip
        return obs, Truth(inputs=images, labels=labels, plaintext=images, extras=extras)

    def train(self, circuit: CkksCircuit, period: int, model: nn.Module, images: torch.Tensor,
              labels: torch.Tensor) -> dict[str, object]:  # fmt: skip
        """`train_steps` SGD steps on encrypted gradients beside the same steps in plaintext (float64), from the
        run's weights, on the run's batch (the attacked round is step 0); losses before each step."""
        he_model, plain_model = _double(model), _double(model)
        objective = LOSSES[self.loss]
        losses_he, losses_plain = [], []
        for _ in range(self.cfg.train_steps):
            with torch.no_grad():
                losses_he.append(float(objective(he_model(images.double()), labels)))
                losses_plain.append(float(objective(plain_model(images.double()), labels)))
            grads, _ = self.encrypted_gradient(circuit, period, he_model, images, labels)
            reference = reference_gradient(plain_model, images, labels, self.loss)
            with torch.no_grad():
                for p, g in zip(he_model.parameters(), grads, strict=True):
                    p -= TRAIN_LR * torch.from_numpy(g).reshape(p.shape)
                for p, g in zip(plain_model.parameters(), reference, strict=True):
                    p -= TRAIN_LR * g
        gap = max(float((a - b).detach().abs().max()) for a, b in zip(he_model.parameters(), plain_model.parameters(),
                                                              strict=True))  # fmt: skip
        return {"lr": TRAIN_LR, "loss_he": losses_he, "loss_plain": losses_plain, "max_weight_gap": gap}

    def he_params(self) -> dict[str, object] | None:
        return getattr(self, "params", None)

    def interpret(self, rec: Reconstruction, truth: Truth, labels: np.ndarray | None) -> Estimates:
        return Estimates(keyless=rec.inputs.reshape(truth.plaintext.shape))
