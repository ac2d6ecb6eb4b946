"""Scenario `ckks-input`: the client encrypts its input and the model is trained on the ciphertext view as data.

The attacker sees the plaintext gradient of that model and recovers a ciphertext view. It is scored against the true
view, after decryption by a key holder, and through the attacker's own keyless decoder (ridge regression from view to
plaintext, fitted on ciphertexts the attacker made itself with the public key, or — for encryptions without a public
key — on chosen-plaintext encryptions the client hands over)."""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.linear_model import RidgeCV
from torch import nn

from encryptors import make_encryptor
from he_leak.data import load_dataset
from he_leak.errors import CiphertextError, ConfigError
from he_leak.records import Observation, Reconstruction, Truth
from he_leak.scenarios.base import SCENARIOS, Estimates, Scenario, shared_gradient

DECODER_SAMPLES = 200  # chosen dataset images the attacker encrypts to fit its keyless decoder ...
DECODER_EXTRA = 64  # ... topped up to n + 64 (mixtures of two of them plus zero-mean noise: same mean, full rank)
DECRYPT_RANGE = 2.0  # a decryption outside [-2, 3] is garbage, not an image in [0,1]


def as_image(flat: np.ndarray) -> np.ndarray:
    """B×D vectors drawn as B×1×S×S images (S = ceil(sqrt(D)), zero padded) for figures."""
    b, d = flat.shape
    side = math.isqrt(d - 1) + 1
    out = np.zeros((b, side * side), np.float64)
    out[:, :d] = flat
    return np.clip(out.reshape(b, 1, side, side), 0, 1)


@SCENARIOS.register("ckks-input")
class CkksInput(Scenario):
    """Model trained on encrypted inputs with plaintext weights; the attacker sees the plaintext gradient."""

    name = "ckks-input"

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.encryptor = cfg.encryptor or "ckks"
        self.enc = None
        self.decoder: RidgeCV | None = None

    def _params(self) -> dict:
        params = dict(self.cfg.encryptor_params)
        if self.cfg.insecure:
            params["insecure"] = True
        return params

    def input_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        self.image_shape = tuple(image_shape)
        self.enc = make_encryptor(self.encryptor, n=math.prod(image_shape), seed=self.cfg.seed, **self._params())
        self.insecure = bool(self.enc.describe().get("insecure", False))
        return (self.enc.view_size,)

    @property
    def quantum(self) -> float | None:
        return self.enc.view_quantum

    @property
    def success_metric(self) -> str:  # type: ignore[override]
        return "symbol_exact" if self.quantum else "input_psnr"

    def threshold(self) -> float:
        return self.cfg.success_symbol_exact if self.quantum else self.cfg.success_psnr

    def observe(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[Observation, Truth]:
        if self.enc is None:
            raise ConfigError("ckks-input: input_shape() must be called before observe()")
        hidden = [self.enc.encrypt(img.reshape(-1).double().numpy()) for img in images]
        views = torch.from_numpy(np.stack([self.enc.view(h) for h in hidden])).float()
        obs = Observation(
            model=model,
            gradients=shared_gradient(model, views, labels),
            input_shape=(self.enc.view_size,),
            batch=len(images),
            classes=self.cfg.classes,
            bounds=self.enc.view_bounds,
            quantum=self.quantum,
            public=self.enc.public(),
        )
        return obs, Truth(inputs=views, labels=labels, plaintext=images, extras={"hidden": hidden})

    def _fit_decoder(self, exclude: set[int]) -> RidgeCV:
        """The attacker's keyless decoder: ridge regression from views to plaintexts of chosen images."""
        ds = load_dataset(self.cfg.data)
        rng = np.random.default_rng(self.cfg.seed + 7919)
        pool = np.array([i for i in range(len(ds)) if i not in exclude])
        chosen = rng.choice(pool, size=min(DECODER_SAMPLES, len(pool)), replace=False)
        plains = ds.images[chosen].reshape(len(chosen), -1).astype(np.float64)
        n = plains.shape[1]
        extra = max(0, n + DECODER_EXTRA - len(plains))
        a, b = plains[rng.integers(len(plains), size=(2, extra))]
        mix = rng.random((extra, 1))
        noise = rng.uniform(-0.1, 0.1, (extra, n))
        plains = np.concatenate([plains, np.clip(mix * a + (1 - mix) * b + noise, 0.0, 1.0)])
        pub = self.enc.public()
        maker = pub if pub.has_public_key else self.enc  # no public key: the client encrypts chosen plaintexts
        views = np.stack([maker.view(maker.encrypt(p)) for p in plains]).astype(np.float64)
        return RidgeCV(alphas=np.logspace(-6, 6, 13)).fit(views, plains)

    def interpret(self, rec: Reconstruction, truth: Truth) -> Estimates:
        exclude = {(self.cfg.index + i) for i in range(self.cfg.batch)}
        self.decoder = self.decoder or self._fit_decoder(exclude)
        views = rec.inputs.detach().cpu().double().numpy()
        shape = truth.plaintext.shape
        keyless = torch.from_numpy(self.decoder.predict(views)).reshape(shape)
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
        return Estimates(keyless=keyless, with_key=with_key, decrypts=torch.tensor(ok))

    def panels(self, rec: Reconstruction, truth: Truth) -> dict[str, np.ndarray]:
        return {
            "view": as_image(truth.inputs.double().numpy()),
            "recovered_view": as_image(rec.inputs.detach().cpu().double().numpy()),
        }
