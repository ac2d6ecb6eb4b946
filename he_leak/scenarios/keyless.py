"""The keyless attacker's decoders: from a recovered model input (a ciphertext view) and the label the gradient
leaks, to an estimate of the plaintext — learned on plaintexts the attacker chose and had encrypted.

Two learners, so that the claim "the view reveals nothing beyond the label" rests on more than one model:

- ``ridge``: kernel (dual) ridge regression from [view, one-hot label] to the image minus its class mean, the
  regularisation chosen by exact leave-one-out error; with a linear scheme (secret permutation, secret linear mask)
  and more samples than view entries it undoes the scheme exactly, with CKKS it falls back to the class mean;
- ``knn``: the class mean plus the mean residual of the k nearest views among the chosen samples (k by
  leave-one-out), which needs no linearity.

The attacker keeps the learner with the lower leave-one-out error on its own samples (no ground truth involved);
both learners' estimates are scored. Memory: views wider than SKETCH_DIM are compressed on the fly by a CountSketch
(each entry added, with a random sign, to one of SKETCH_DIM buckets), so the decoder holds m × SKETCH_DIM floats and an
m × m Gram matrix, never m full views. A CountSketch rather than scikit-learn's SparseRandomProjection: building the
latter for 131072 → 4096 took 2.9 s per run here (density 8/4096), the scipy CountSketch takes milliseconds; it is a
sparse JL sketch of the same kind (Clarkson & Woodruff 2013).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors

SKETCH_DIM = 4096  # views wider than this are sketched to this many features
LABEL_SCALE = 100.0  # one-hot label columns are scaled up so that ridge fits class offsets almost unpenalised
ALPHAS = np.logspace(-6, 6, 13)  # ridge penalties tried (features are standardised)
SELECT_COLUMNS = 128  # target pixels the leave-one-out errors are computed on (a seeded random subset)
NEIGHBOURS = (1, 3, 10, 30)  # k tried by the kNN learner's leave-one-out
BLOCK_VALUES = 2**23  # views are sketched in blocks of at most this many values (32 MB of float32)


def count_sketch(width: int, *, dim: int, seed: int) -> sp.csr_matrix | None:
    """A width × dim CountSketch matrix, or None when the views are narrow enough to keep whole."""
    if width <= dim:
        return None
    rng = np.random.default_rng(seed)
    buckets = rng.integers(dim, size=width)
    signs = rng.choice(np.array([-1.0, 1.0], np.float32), size=width)
    return sp.csr_matrix((signs, (np.arange(width), buckets)), shape=(width, dim))


class DualRidge:
    """Ridge regression with an intercept in the dual (kernel) form: memory m² for m samples, whatever the feature
    and target widths; alpha by exact leave-one-out error (hat-matrix diagonal) on a subset of target columns."""

    def __init__(self, *, alphas: np.ndarray = ALPHAS, seed: int = 0) -> None:
        self.alphas, self.seed = np.asarray(alphas, np.float64), seed

    def fit(self, x: np.ndarray, y: np.ndarray) -> DualRidge:
        self.x_mean, self.y_mean = x.mean(0), y.mean(0)
        self.xc, self.yc = x - self.x_mean, y - self.y_mean
        lam, u = scipy.linalg.eigh(self.xc @ self.xc.T, driver="evd")
        lam = np.clip(lam, 0.0, None)
        cols = np.random.default_rng(self.seed).permutation(y.shape[1])[:SELECT_COLUMNS]
        uty = u.T @ self.yc[:, cols]
        scores = []
        for alpha in self.alphas:
            shrink = alpha / (lam + alpha)  # I − H in the eigenbasis
            residual = u @ (shrink[:, None] * uty)
            leverage = 1.0 - (u * u) @ shrink  # diag(H); centring adds 1/m to it
            loo = residual / np.clip(1.0 - leverage - 1.0 / len(x), 1e-12, None)[:, None]
            scores.append(float(np.mean(loo**2)))
        best = int(np.argmin(scores))
        self.alpha, self.loo_mse = float(self.alphas[best]), scores[best]
        self.u, self.lam = u, lam
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        k = self.xc @ (x - self.x_mean).T  # m × B
        w = self.u @ ((self.u.T @ k) / (self.lam + self.alpha)[:, None])
        return self.y_mean + w.T @ self.yc


@dataclass(frozen=True)
class Estimate:
    """Plaintext estimates (B × n) of each learner and the one the attacker picked (by its own LOO error)."""

    by_learner: dict[str, np.ndarray]
    chosen: str
    loo_mse: dict[str, float]

    @property
    def best(self) -> np.ndarray:
        return self.by_learner[self.chosen]


class KeylessDecoder:
    """Fitted on (view, label, plaintext) triples the attacker made itself; predicts plaintexts from views + labels."""

    def __init__(self, *, classes: int, seed: int, sketch_dim: int = SKETCH_DIM) -> None:
        self.classes, self.seed, self.sketch_dim = classes, seed, sketch_dim
        self.sketch: sp.csr_matrix | None = None

    def _features(self, views: np.ndarray) -> np.ndarray:
        views = np.asarray(views, np.float32)
        if self.sketch is None:
            return views.astype(np.float64)
        return np.asarray((self.sketch.T @ views.T).T, np.float64)  # sparse @ dense: no float64 copy of the views

    def fit(
        self,
        views: Iterable[np.ndarray],
        plains: np.ndarray,
        labels: np.ndarray,
        class_means: np.ndarray,
    ) -> KeylessDecoder:
        """`views` yields one view per plaintext (streamed, sketched in blocks); `plains` (m × n), their soft labels
        `labels` (m × classes) and the `class_means` (classes × n) the priors come from are the attacker's own."""
        blocks, block = [], []
        for v in views:
            if self.sketch is None and not blocks and not block:
                self.sketch = count_sketch(v.size, dim=self.sketch_dim, seed=self.seed)
            block.append(np.asarray(v, np.float32).reshape(-1))
            if len(block) * v.size >= BLOCK_VALUES:
                blocks.append(self._features(np.stack(block)))
                block = []
        if block:
            blocks.append(self._features(np.stack(block)))
        feats = np.concatenate(blocks)
        self.mean, self.scale = feats.mean(0), feats.std(0) + 1e-12
        feats = (feats - self.mean) / self.scale
        residual = plains - labels @ class_means
        self.ridge = DualRidge(seed=self.seed).fit(np.hstack([feats, LABEL_SCALE * labels]), residual)
        loo = {"ridge": self.ridge.loo_mse}
        self.knn_index = NearestNeighbors(n_neighbors=max(NEIGHBOURS) + 1).fit(feats)
        _, idx = self.knn_index.kneighbors(feats)
        neighbours = idx[:, 1:]  # leave-one-out: drop the sample itself
        cols = np.random.default_rng(self.seed).permutation(residual.shape[1])[:SELECT_COLUMNS]
        sub = residual[:, cols]  # the same columns the ridge's leave-one-out error is measured on
        scores = {k: float(np.mean((sub[neighbours[:, :k]].mean(1) - sub) ** 2)) for k in NEIGHBOURS}
        self.k = min(scores, key=scores.__getitem__)
        loo["knn"] = scores[self.k]
        self.residual, self.loo = residual, loo
        return self

    def predict(self, views: np.ndarray, labels: np.ndarray, prior: np.ndarray) -> Estimate:
        """Estimates for recovered views, given each sample's soft label (B × classes: the recovered class, or the
        class frequencies when no label was recovered) and prior image (B × n)."""
        feats = (self._features(views) - self.mean) / self.scale
        soft = np.asarray(labels, np.float64)
        by = {"ridge": prior + self.ridge.predict(np.hstack([feats, LABEL_SCALE * soft]))}
        _, idx = self.knn_index.kneighbors(feats, n_neighbors=self.k)
        by["knn"] = prior + self.residual[idx].mean(1)
        chosen = min(self.loo, key=self.loo.__getitem__)
        return Estimate(by, chosen, dict(self.loo))


def chosen_plaintexts(
    pool: np.ndarray, pool_labels: np.ndarray, *, count: int, classes: int, seed: int,
    fallback: Callable[[int, np.random.Generator], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """`count` plaintexts (flat, float64) with soft labels (count × classes): the pool's images first, then mixtures
    of two of them plus small zero-mean noise (same mean, full rank), or `fallback` images when the pool is empty."""
    rng = np.random.default_rng(seed)
    if len(pool) == 0:
        return fallback(count, rng), np.full((count, classes), 1.0 / classes)
    flat = pool.reshape(len(pool), -1).astype(np.float64)
    onehot = np.eye(classes)[pool_labels.astype(int)] if len(pool) else np.zeros((0, classes))
    take = rng.permutation(len(flat))[:count]
    plains, labels = flat[take], onehot[take]
    extra = count - len(plains)
    if extra <= 0:
        return plains, labels
    a, b = rng.integers(len(plains), size=(2, extra))
    mix = rng.random((extra, 1))
    noise = rng.uniform(-0.1, 0.1, (extra, flat.shape[1]))
    mixed = np.clip(mix * plains[a] + (1 - mix) * plains[b] + noise, 0.0, 1.0)
    soft = mix * labels[a] + (1 - mix) * labels[b]
    return np.concatenate([plains, mixed]), np.concatenate([labels, soft])
