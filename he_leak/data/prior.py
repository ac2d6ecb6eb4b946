"""The best prior an attacker has without any reconstruction: the mean image of the class the gradient reveals
(the label leaks from the output layer's gradient), computed on the dataset without the attacked samples
(leave-one-out); the dataset mean when no label is known; mid-grey when the dataset holds nothing else."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EMPTY_VALUE = 0.5  # the centre of the [0, 1] box: the prior when no other sample exists


@dataclass(frozen=True)
class Prior:
    """Class means (classes × C×H×W) and the overall mean of a dataset without the attacked samples."""

    class_means: np.ndarray
    overall: np.ndarray
    class_counts: np.ndarray

    @classmethod
    def of(cls, images: np.ndarray, labels: np.ndarray, *, classes: int, exclude: np.ndarray) -> Prior:
        keep = np.ones(len(images), bool)
        keep[np.asarray(exclude, int)] = False
        pool, pool_labels = images[keep].astype(np.float64), labels[keep].astype(int)
        shape = images.shape[1:]
        overall = pool.mean(0) if len(pool) else np.full(shape, EMPTY_VALUE)
        counts = np.bincount(pool_labels, minlength=classes)[:classes] if len(pool) else np.zeros(classes, int)
        means = np.stack([pool[pool_labels == c].mean(0) if counts[c] else overall for c in range(classes)])
        return cls(means, overall, counts)

    def images(self, labels: np.ndarray | None, batch: int) -> np.ndarray:
        """One prior image per sample: the class mean of each recovered label, or the overall mean (labels None)."""
        if labels is None:
            return np.repeat(self.overall[None], batch, axis=0)
        return self.class_means[np.asarray(labels, int)]
