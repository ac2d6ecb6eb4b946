"""Scenario `ckks-input`: the client encrypts its input and the model is trained on the ciphertext view as data.

The attacker sees the plaintext gradient of that model and recovers a ciphertext view. It is scored against the true
view, after decryption by a key holder, and through the attacker's own keyless decoders (he_leak.scenarios.keyless:
label-aware ridge and k-NN from view to plaintext, fitted on ciphertexts the attacker made itself with the public key,
or — for encryptions without a public key — on chosen-plaintext encryptions the client hands over). The attacker's
chosen plaintexts are the dataset's other images (never the attacked ones), topped up with mixtures of them; when the
dataset holds no other image (a one-image user file), uniform random images in [0, 1].

A sample counts as recovered only when its view is exact (every symbol, for quantised views) and the key holder's
decryption of it is within the scheme's precision of the plaintext (continuous views: key-holder PSNR ≥ success_psnr).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from encryptors import make_encryptor
from he_leak.errors import CiphertextError, ConfigError
from he_leak.records import HeCost, Observation, Observed, Reconstruction, Truth
from he_leak.scenarios.base import SCENARIOS, Estimates, Pool, SampleScores, Scenario
from he_leak.scenarios.keyless import KeylessDecoder, chosen_plaintexts
from he_leak.seeds import PublicSeed, derive

DECODER_EXTRA = 64  # chosen plaintexts: n + 64 (a linear scheme is then over-determined) ...
DECODER_VALUES = 3136 * 3072  # ... but at most this many plaintext values in all (photos: 3136 images of 3072) ...
DECODER_MIN = 256  # ... and at least this many images (a 64×64 RGB image gets 784: a linear scheme stays open)
DECRYPT_RANGE = 2.0  # a decryption outside [-2, 3] is garbage, not an image in [0,1]


def as_image(flat: np.ndarray) -> np.ndarray:
    """B×D vectors drawn as B×1×S×S images (S = ceil(sqrt(D)), zero padded) for figures."""
    b, d = flat.shape
    side = math.isqrt(d - 1) + 1
    out = np.zeros((b, side * side), np.float64)
    out[:, :d] = flat
    return np.clip(out.reshape(b, 1, side, side), 0, 1)


class ByteViews:
    """Quantised views stored as uint8 codes; indexing returns float32 views."""

    def __init__(self, codes: np.ndarray, quantum: float) -> None:
        self.codes, self.quantum = torch.from_numpy(codes), quantum

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        return self.codes[index].float() * self.quantum


@SCENARIOS.register("ckks-input")
class CkksInput(Scenario):
    """Model trained on encrypted inputs with plaintext weights; the attacker sees the plaintext gradient."""

    name = "ckks-input"
    utility_measured = "on ciphertext views"

    def __init__(self, cfg, **kwargs) -> None:
        super().__init__(cfg, **kwargs)
        self.encryptor = cfg.encryptor or "ckks"
        self.enc = None

    def _params(self) -> dict:
        params = dict(self.cfg.encryptor_params)
        if self.cfg.insecure:
            params["insecure"] = True
        return params

    def input_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        self.image_shape = tuple(image_shape)
        n = math.prod(image_shape)
        self.enc = make_encryptor(self.encryptor, n=n, key_seed=self.key_seed, **self._params())
        self.insecure = bool(self.enc.describe().get("insecure", False))
        return (self.enc.view_size,)

    @property
    def quantum(self) -> float | None:
        return self.enc.view_quantum

    def he_params(self) -> dict[str, object] | None:
        return self.enc.describe()

    def observe(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Observed:
        if self.enc is None:
            raise ConfigError("ckks-input: input_shape() must be called before observe()")
        hidden = [self.enc.encrypt(img.reshape(-1).double().numpy()) for img in images]
        views = torch.from_numpy(np.stack([self.enc.view(h) for h in hidden])).float()
        obs = Observation(
            model=model,
            gradients=self.share(self.client_gradient(model, views, labels)),
            input_shape=(self.enc.view_size,),
            batch=len(images),
            classes=self.cfg.classes,
            bounds=self.enc.view_bounds,
            quantum=self.quantum,
            public=self.enc.public(seed=PublicSeed.of(self.cfg.seed, "attacker")),  # the attacker's own randomness
            loss=self.loss,
        )
        truth = Truth(inputs=views, labels=labels, plaintext=images, ciphertexts=tuple(hidden))
        return Observed(obs, truth, HeCost(key_bytes=self.enc.public_key_bytes()))

    def training_inputs(self, images: np.ndarray) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Every image encrypted once under the client's key, as views (kept as byte codes when the view is
        quantised: a quarter of the memory)."""
        views = [self.enc.view(self.enc.encrypt(img.reshape(-1).astype(np.float64))) for img in images]
        if self.quantum:
            return ByteViews(np.rint(np.stack(views) / self.quantum).astype(np.uint8), self.quantum), (
                self.enc.view_size,
            )
        return torch.from_numpy(np.stack(views)), (self.enc.view_size,)

    def decoder_samples(self, image_shape: tuple[int, ...]) -> int:
        n = math.prod(image_shape)
        return min(n + DECODER_EXTRA, max(DECODER_MIN, DECODER_VALUES // n))

    def fit_decoder(self, pool: Pool) -> KeylessDecoder:
        """The attacker's keyless decoders, fitted on chosen plaintexts it encrypts itself (public-key schemes) or
        has the client encrypt (keyless schemes); the attacked samples are never among them."""
        ds, prior, keep = pool.dataset, pool.prior, pool.others
        n = math.prod(self.image_shape)
        count = self.decoder_samples(self.image_shape)
        seed = derive(self.cfg.seed, "attacker", "decoder")
        plains, soft = chosen_plaintexts(
            ds.images[keep], ds.labels[keep], count=count, classes=self.cfg.classes, seed=seed,
            fallback=lambda k, rng: rng.random((k, n)),
        )  # fmt: skip
        pub = self.enc.public(seed=PublicSeed.of(self.cfg.seed, "attacker", "decoder"))
        maker = pub if pub.has_public_key else self.enc  # no public key: the client encrypts chosen plaintexts
        views = (maker.view(maker.encrypt(p)) for p in plains)
        means = prior.class_means.reshape(self.cfg.classes, -1)
        return KeylessDecoder(classes=self.cfg.classes, seed=seed).fit(views, plains, soft, means)

    def interpret(self, rec: Reconstruction, truth: Truth, labels: np.ndarray | None, pool: Pool) -> Estimates:
        decoder = self.fit_decoder(pool)
        prior = pool.prior
        views = rec.inputs.detach().cpu().double().numpy()
        shape = truth.plaintext.shape
        if labels is None:
            soft = np.repeat((prior.class_counts / max(prior.class_counts.sum(), 1))[None], len(views), axis=0)
        else:
            soft = np.eye(self.cfg.classes)[np.asarray(labels, int)]
        guess = prior.images(labels, len(views)).reshape(len(views), -1)
        estimate = decoder.predict(views, soft, guess)
        keyless = {k: torch.from_numpy(v).reshape(shape) for k, v in estimate.by_learner.items()}
        decrypted, ok = [], []
        for v in views:
            try:
                x = np.asarray(self.enc.decrypt(self.enc.unview(v.astype(np.float32))), np.float64)
                good = bool(np.isfinite(x).all() and np.abs(x - 0.5).max() <= DECRYPT_RANGE)
            except CiphertextError:
                x, good = np.zeros(math.prod(shape[1:])), False
            decrypted.append(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0))
            ok.append(good)
        with_key = torch.from_numpy(np.stack(decrypted)).reshape(shape)
        return Estimates(
            keyless=keyless[estimate.chosen], with_key=with_key, decrypts=torch.tensor(ok), by_learner=keyless,
            chosen=estimate.chosen,
        )  # fmt: skip

    def recovered(self, sample: SampleScores) -> bool:
        """Quantised views: every symbol exact and the decryption within the scheme's precision; continuous views:
        the key holder's PSNR reaches success_psnr."""
        if not sample.decrypts:
            return False
        if self.quantum:
            return bool(sample.view_exact) and sample.key_error is not None and sample.key_error <= self.enc.precision
        return sample.key_psnr is not None and sample.key_psnr >= self.cfg.success_psnr

    def panels(self, rec: Reconstruction, truth: Truth) -> dict[str, np.ndarray]:
        return {
            "view": as_image(truth.inputs.double().numpy()),
            "recovered_view": as_image(rec.inputs.detach().cpu().double().numpy()),
        }
