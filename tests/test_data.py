"""Every dataset loads offline with C×H×W float32 samples in [0,1]; user files of every kind load or fail clearly."""

import numpy as np
import pytest
from skimage.io import imsave

from he_leak.data import DATASETS, load_dataset, load_path
from he_leak.errors import ConfigError, DataError

SHAPES = {"digits": (1, 8, 8), "faces": (1, 25, 25), "photos": (3, 32, 32), "biomed": (3, 32, 32)}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_builtin_dataset_loads_offline(name):
    ds = load_dataset(name)
    assert ds.shape == SHAPES[name]
    assert ds.images.dtype == np.float32
    assert ds.images.min() >= 0.0 and ds.images.max() <= 1.0
    assert ds.images.std() > 0.05  # real images, not a constant
    assert ds.labels.min() >= 0 and ds.labels.max() < 10
    x, y = ds.batch(len(ds) - 1, 2)  # wraps around
    assert x.shape == (2, *ds.shape) and y.shape == (2,)


def test_every_builtin_is_tested():
    assert set(DATASETS) == set(SHAPES)


def test_unknown_dataset_lists_known():
    with pytest.raises(ConfigError, match="known: biomed, digits, faces, photos"):
        load_dataset("cifar")


def test_index_out_of_range():
    with pytest.raises(ConfigError, match="out of range"):
        load_dataset("digits").batch(5000, 1)


def test_png_npy_npz_and_folder(tmp_path):
    rgb = (np.arange(6 * 5 * 3).reshape(6, 5, 3) % 256).astype(np.uint8)
    imsave(tmp_path / "a.png", rgb, check_contrast=False)
    ds = load_path(tmp_path / "a.png")
    assert ds.shape == (3, 6, 5) and ds.labels.tolist() == [0]
    np.testing.assert_allclose(ds.images[0].transpose(1, 2, 0), rgb / 255.0, atol=1e-6)

    np.save(tmp_path / "one.npy", np.full((4, 4), 0.25))
    assert load_path(tmp_path / "one.npy").shape == (1, 4, 4)
    np.save(tmp_path / "many.npy", np.random.default_rng(0).random((3, 4, 4, 3)))
    assert len(load_path(tmp_path / "many.npy")) == 3

    np.savez(tmp_path / "xy.npz", x=np.zeros((2, 5, 5)), y=np.array([3, 4]))
    assert load_path(tmp_path / "xy.npz").labels.tolist() == [3, 4]

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        imsave(folder / f"{i}.png", np.full((7, 7), 40 * i, np.uint8), check_contrast=False)
    assert load_path(folder).shape == (1, 7, 7) and len(load_path(folder)) == 3


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p / "missing.png", "no such file"),
        (lambda p: (p / "bad.png").write_bytes(b"not a png") and p / "bad.png", "cannot read"),
        (lambda p: np.savez(p / "noX.npz", z=np.zeros(3)) or p / "noX.npz", "no array 'x'"),
        (lambda p: np.save(p / "five.npy", np.zeros((1, 2, 3, 4, 5))) or p / "five.npy", "is not H×W"),
        (lambda p: (p / "a.txt").write_text("x") and p / "a.txt", "unsupported file type"),
    ],
)
def test_bad_user_files_raise_data_error(tmp_path, make, match):
    with pytest.raises(DataError, match=match):
        load_path(make(tmp_path))
