"""Built-in offline datasets (registered by name) and `load_dataset`, which also opens user files
(he_leak.data.user_files).

Samples are float32 C×H×W in [0,1] with an int64 label. Every built-in ships with scikit-learn or scikit-image, so
nothing is downloaded: `digits` (8×8 grey, 10 classes), `faces` (the 100 LFW faces, 25×25 grey, label 0: no
identities ship), `lfw` (those faces plus 100 non-face patches: a face/non-face task, 1 = face, 0 = non-face),
`photos` (32×32 RGB crops of seven photos, label = photo) and `photos64` (the same crops at 64×64), `biomed`
(32×32 RGB crops of four microscopy/medical images, label = image).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from he_leak.data.user_files import read_user_data
from he_leak.errors import ConfigError, DataError
from he_leak.options import is_user_path
from he_leak.registry import Registry

DATASETS: Registry = Registry("dataset")
LFW_FACES = 100  # skimage.data.lfw_subset: the first 100 images are faces, the next 100 are not


@dataclass(frozen=True)
class Dataset:
    """Images (N×C×H×W float32 in [0,1]) with N non-negative integer labels."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    note: str = ""  # how a user's array was read, when another layout reads more images (user_files.layout_note)

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or len(self.images) != len(self.labels) or len(self.images) == 0:
            raise DataError(f"{self.name}: expected N×C×H×W images with N labels, got {self.images.shape}")
        if self.labels.ndim != 1 or self.labels.dtype.kind not in "iu":
            raise DataError(f"{self.name}: labels must be a 1-D integer array, got {self.labels.dtype}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.images)

    def indices(self, index: int, size: int, *, asked: str | None = None) -> np.ndarray:
        """The dataset indices of `batch(index, size)`: `size` consecutive samples from `index`, wrapping around at
        the end, so code that must leave a run's samples out (a keyless decoder, a leave-one-out prior) can.
        `asked` names the options that ask for `size` samples (default "--batch N"), for the error message."""
        read = f" ({self.name} was {self.note})" if self.note else ""
        if not 0 <= index < len(self):
            raise ConfigError(f"--index {index} is out of range for {self.name} (0..{len(self) - 1}){read}")
        if not 1 <= size <= len(self):
            raise ConfigError(f"{asked or f'--batch {size}'} asks for {size} samples but {self.name} holds "
                              f"{len(self)}{read}; lower it or give more data")  # fmt: skip
        return (index + np.arange(size)) % len(self)

    def batch(self, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of the samples at `indices(index, size)`."""
        idx = self.indices(index, size)
        return self.images[idx], self.labels[idx]


def check_labels(labels: np.ndarray, classes: int, *, where: str) -> None:
    """Refuse labels the model cannot output (ConfigError naming --classes)."""
    if len(labels) and int(labels.min()) < 0:
        raise DataError(f"{where} has a negative label {int(labels.min())}; labels are class numbers 0, 1, 2, …")
    if len(labels) and int(labels.max()) >= classes:
        top = int(labels.max())
        raise ConfigError(f"{where} has label {top} but --classes is {classes}; raise --classes to at least {top + 1}")


def load_dataset(name: str, *, layout: str = "auto", normalize: bool = False) -> Dataset:
    """A registered dataset by name, or else a user path (anything with a suffix or a path separator) read by
    he_leak.data.user_files's rules. Built-ins ignore `normalize` (they lie in [0,1]) and refuse a non-auto `layout`."""
    if name in DATASETS:
        if layout != "auto":
            raise ConfigError(f"--layout {layout} applies to user .npy/.npz files; {name} is a built-in dataset "
                              "(drop --layout)")  # fmt: skip
        return DATASETS[name]()
    if is_user_path(name):
        return load_path(Path(name), layout=layout, normalize=normalize)
    return DATASETS[name]  # raises ConfigError listing the known datasets


def load_path(path: Path, *, layout: str = "auto", normalize: bool = False) -> Dataset:
    """A user file or folder (see he_leak.data.user_files for what is read and what is refused)."""
    images, labels, note = read_user_data(path, layout=layout, normalize=normalize)
    return Dataset(str(path), images, labels, note)


def _crops(photo: np.ndarray, *, side: int, grid: int) -> list[np.ndarray]:
    """Centre square of an H×W×C uint8 photo, resized to grid·side, cut into grid² side×side tiles (C×H×W)."""
    from skimage.transform import resize

    h, w = photo.shape[:2]
    s = min(h, w)
    sq = photo[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s].astype(np.float32) / 255.0
    big = np.clip(resize(sq, (grid * side, grid * side), anti_aliasing=True), 0.0, 1.0)
    big = np.ascontiguousarray(big.transpose(2, 0, 1), dtype=np.float32)
    return [big[:, r * side : (r + 1) * side, c * side : (c + 1) * side] for r in range(grid) for c in range(grid)]


def _from_photos(name: str, photos: list[np.ndarray], *, side: int) -> Dataset:
    """3×3 RGB tiles of each photo's centre square, labelled by photo (grey photos repeated to three channels)."""
    images, labels = [], []
    for label, photo in enumerate(photos):
        rgb = photo if photo.ndim == 3 else np.repeat(photo[..., None], 3, axis=-1)
        tiles = _crops(rgb[..., :3], side=side, grid=3)
        images += tiles
        labels += [label] * len(tiles)
    return Dataset(name, np.stack(images), np.array(labels, np.int64))


def _photo_list() -> list[np.ndarray]:
    from skimage import data as sk
    from sklearn.datasets import load_sample_images

    shots = [sk.astronaut(), sk.chelsea(), sk.coffee(), sk.rocket(), sk.hubble_deep_field()]
    return shots + list(load_sample_images().images)


@lru_cache(maxsize=1)
def _lfw() -> np.ndarray:
    from skimage.data import lfw_subset

    return np.clip(lfw_subset().astype(np.float32)[:, None], 0.0, 1.0)


@DATASETS.register("digits")
@lru_cache(maxsize=1)
def digits() -> Dataset:
    """scikit-learn's 8×8 handwritten digits (1797 images, 10 classes, grey levels 0..16)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return Dataset("digits", (d.images[:, None] / 16.0).astype(np.float32), d.target.astype(np.int64))


@DATASETS.register("faces")
@lru_cache(maxsize=1)
def faces() -> Dataset:
    """The 100 faces of scikit-image's LFW subset (25×25 grey), all label 0 (the subset ships no identities)."""
    return Dataset("faces", _lfw()[:LFW_FACES].copy(), np.zeros(LFW_FACES, np.int64))


@DATASETS.register("lfw")
@lru_cache(maxsize=1)
def lfw() -> Dataset:
    """scikit-image's whole LFW subset as a face/non-face task: 100 faces (label 1), then 100 non-faces (label 0)."""
    x = _lfw()
    return Dataset("lfw", x.copy(), (np.arange(len(x)) < LFW_FACES).astype(np.int64))


@DATASETS.register("photos")
@lru_cache(maxsize=1)
def photos() -> Dataset:
    """32×32 RGB crops (3×3 tiles of each centre square) of the photos scikit-image and scikit-learn ship."""
    return _from_photos("photos", _photo_list(), side=32)


@DATASETS.register("photos64")
@lru_cache(maxsize=1)
def photos64() -> Dataset:
    """`photos` at 64×64: the same tiles of the same photos, same order and labels, twice the resolution."""
    return _from_photos("photos64", _photo_list(), side=64)


@DATASETS.register("biomed")
@lru_cache(maxsize=1)
def biomed() -> Dataset:
    """32×32 RGB crops of scikit-image's cell, immunohistochemistry, retina and microaneurysms images."""
    from skimage import data as sk

    return _from_photos("biomed", [sk.cell(), sk.immunohistochemistry(), sk.retina(), sk.microaneurysms()], side=32)
