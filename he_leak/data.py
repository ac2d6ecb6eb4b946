"""Offline, real datasets (registered by name) and user files; samples are float32 C×H×W in [0,1] with a label."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from he_leak.errors import ConfigError, DataError
from he_leak.registry import Registry

DATASETS: Registry = Registry("dataset")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Dataset:
    """Images (N×C×H×W float32 in [0,1]) with integer labels."""

    name: str
    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or len(self.images) != len(self.labels) or len(self.images) == 0:
            raise DataError(f"{self.name}: expected N×C×H×W images with N labels, got {self.images.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """`size` consecutive samples starting at `index` (wrapping around)."""
        if not 0 <= index < len(self):
            raise ConfigError(f"--index {index} is out of range for {self.name} (0..{len(self) - 1})")
        if not 1 <= size <= len(self):
            raise ConfigError(f"--batch {size} must be between 1 and {len(self)} for {self.name}")
        idx = (index + np.arange(size)) % len(self)
        return self.images[idx], self.labels[idx]


def _to_chw(img: np.ndarray) -> np.ndarray:
    """H×W or H×W×C (uint8, bool or float) -> float32 C×H×W in [0,1]."""
    a = np.asarray(img)
    if a.dtype == bool:
        a = a.astype(np.float32)
    elif np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    a = a.astype(np.float32)
    if a.ndim == 2:
        a = a[None]
    elif a.ndim == 3 and a.shape[-1] in (1, 3, 4):
        a = np.moveaxis(a[..., :3] if a.shape[-1] == 4 else a, -1, 0)
    elif a.ndim != 3:
        raise DataError(f"image of shape {a.shape} is neither H×W nor H×W×C")
    if not np.isfinite(a).all():
        raise DataError("image holds NaN or inf values")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0 or hi > 1:  # e.g. float arrays in 0..255: rescale rather than clip silently
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return np.ascontiguousarray(a)


def _crops(photo: np.ndarray, *, side: int, grid: int) -> list[np.ndarray]:
    """Centre square of a photo, resized to grid·side, cut into grid² tiles of side×side (C×H×W)."""
    from skimage.transform import resize

    h, w = photo.shape[:2]
    s = min(h, w)
    sq = photo[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    big = _to_chw(resize(_to_chw(sq).transpose(1, 2, 0), (grid * side, grid * side), anti_aliasing=True))
    return [big[:, r * side : (r + 1) * side, c * side : (c + 1) * side] for r in range(grid) for c in range(grid)]


def _from_photos(name: str, photos: list[np.ndarray], *, channels: int) -> Dataset:
    images, labels = [], []
    for label, photo in enumerate(photos):
        rgb = photo if photo.ndim == 3 else np.repeat(photo[..., None], channels, axis=-1)
        tiles = _crops(rgb[..., :channels], side=32, grid=3)
        images += tiles
        labels += [label] * len(tiles)
    return Dataset(name, np.stack(images), np.array(labels))


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
    """scikit-image's LFW subset: 200 grey 25×25 crops, label 0 for the 100 faces and 1 for the 100 non-faces."""
    from skimage.data import lfw_subset

    x = lfw_subset().astype(np.float32)[:, None]
    return Dataset("faces", np.clip(x, 0, 1), np.repeat(np.arange(2), 100))


@DATASETS.register("photos")
@lru_cache(maxsize=1)
def photos() -> Dataset:
    """32×32 RGB crops (3×3 tiles of each centre square) of the photos scikit-image and scikit-learn ship."""
    from skimage import data as sk
    from sklearn.datasets import load_sample_images

    shots = [sk.astronaut(), sk.chelsea(), sk.coffee(), sk.rocket(), sk.hubble_deep_field()]
    return _from_photos("photos", shots + list(load_sample_images().images), channels=3)


@DATASETS.register("biomed")
@lru_cache(maxsize=1)
def biomed() -> Dataset:
    """32×32 RGB crops of scikit-image's cell, immunohistochemistry, retina and microaneurysms images."""
    from skimage import data as sk

    return _from_photos("biomed", [sk.cell(), sk.immunohistochemistry(), sk.retina(), sk.microaneurysms()], channels=3)


def _read_image(path: Path) -> np.ndarray:
    from skimage.io import imread

    try:
        return _to_chw(imread(path))
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot read image {path}: {e}; give a PNG/JPEG file") from e


def _from_array(x: np.ndarray, y: np.ndarray | None, name: str) -> Dataset:
    x = np.asarray(x)
    if x.ndim in (2,) or (x.ndim == 3 and x.shape[-1] in (1, 3, 4)):
        batch = [_to_chw(x)]
    elif x.ndim in (3, 4):
        batch = [_to_chw(a) for a in x]
    else:
        raise DataError(f"{name}: array of shape {x.shape} is not H×W, H×W×C, N×H×W or N×H×W×C")
    labels = np.zeros(len(batch), np.int64) if y is None else np.asarray(y).astype(np.int64).reshape(-1)
    if len(labels) != len(batch):
        raise DataError(f"{name}: {len(labels)} labels for {len(batch)} images")
    return Dataset(name, np.stack(batch), labels)


def load_path(path: Path) -> Dataset:
    """A user file or folder: PNG/JPEG, .npy (H×W, H×W×C or N×…), .npz with `x` (and optional `y`), or a folder."""
    if not path.exists():
        raise DataError(f"no such file or folder: {path}")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        imgs = [_read_image(p) for p in files]
        if len({i.shape for i in imgs}) != 1:
            raise DataError(f"images in {path} differ in shape; resize them to one H×W×C")
        return Dataset(str(path), np.stack(imgs), np.zeros(len(imgs), np.int64))
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return _from_array(np.load(path, allow_pickle=False), None, str(path))
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "x" not in z:
                    raise DataError(f"{path} has no array 'x' (found: {', '.join(z.files)})")
                labels = z["y"] if "y" in z.files else None
                return _from_array(z["x"], labels, str(path))
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from e
    if suffix in IMAGE_SUFFIXES:
        return Dataset(str(path), _read_image(path)[None], np.zeros(1, np.int64))
    raise DataError(f"{path}: unsupported file type {suffix!r}; use PNG/JPEG, .npy, .npz or a folder of images")


def load_dataset(name: str) -> Dataset:
    """A registered dataset by name, or else a user path (anything with a suffix or a path separator)."""
    if name in DATASETS:
        return DATASETS[name]()
    if "/" in name or "." in name or Path(name).exists():
        return load_path(Path(name))
    return DATASETS[name]  # raises ConfigError listing the known datasets
