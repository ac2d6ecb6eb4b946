"""Built-in datasets load offline in [0,1]; every kind of user input is read to the exact pixels or refused in one line.

Read cases compare the loaded float32 images with a float64 reference computed from the source pixels (the array
written, or Pillow's decoding of the file for lossy/converted formats); refusals must be one line naming the fix.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from he_leak.cli import main
from he_leak.data import DATASETS, Dataset, check_labels, load_dataset, load_path
from he_leak.errors import ConfigError, DataError

FLOAT32_TOL = 1e-7  # float32 storage of a value in [0, 1] is off by at most 2**-25 ≈ 3e-8
PHOTOS64_MIN_PSNR = 25.0  # dB: a 64×64 tile shrunk to 32×32 against the `photos` tile of the same index
SHAPES = {
    "digits": (1, 8, 8), "faces": (1, 25, 25), "lfw": (1, 25, 25), "photos": (3, 32, 32),
    "photos64": (3, 64, 64), "biomed": (3, 32, 32),
}  # fmt: skip
RNG = np.random.default_rng(0)
U8 = RNG.integers(0, 256, (5, 6, 3), dtype=np.uint8)  # H×W×C source pixels
U16 = RNG.integers(0, 65536, (5, 6), dtype=np.uint16)
F = RNG.random((2, 3, 5, 6))  # N×C×H×W floats in [0, 1)


# ---------------------------------------------------------------- built-in datasets


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_builtin_dataset_loads_offline(name):
    ds = load_dataset(name)
    assert ds.shape == SHAPES[name]
    assert ds.images.dtype == np.float32 and ds.labels.dtype == np.int64
    assert ds.images.min() >= 0.0 and ds.images.max() <= 1.0
    assert ds.images.std() > 0.05  # real images, not a constant
    assert ds.labels.min() >= 0 and ds.labels.max() < 10
    x, y = ds.batch(len(ds) - 1, 2)  # wraps around
    assert x.shape == (2, *ds.shape) and y.shape == (2,)


def test_every_builtin_is_tested():
    assert set(DATASETS) == set(SHAPES)


def test_faces_are_the_lfw_faces_only():
    faces, lfw = load_dataset("faces"), load_dataset("lfw")
    assert len(faces) == 100 and set(faces.labels.tolist()) == {0}
    assert len(lfw) == 200 and lfw.labels.tolist() == [1] * 100 + [0] * 100  # 1 = face, 0 = non-face patch
    np.testing.assert_array_equal(faces.images, lfw.images[lfw.labels == 1])


def test_photos64_are_the_photos_tiles_at_twice_the_resolution():
    small, big = load_dataset("photos"), load_dataset("photos64")
    np.testing.assert_array_equal(small.labels, big.labels)
    shrunk = big.images.reshape(len(big), 3, 32, 2, 32, 2).mean(axis=(3, 5), dtype=np.float64)
    mse = ((shrunk - small.images) ** 2).mean(axis=(1, 2, 3))
    assert (10 * np.log10(1 / mse)).min() >= PHOTOS64_MIN_PSNR


def test_unknown_dataset_lists_known():
    with pytest.raises(ConfigError, match="known: biomed, digits, faces, lfw, photos, photos64"):
        load_dataset("cifar")


def test_builtin_refuses_a_layout():
    with pytest.raises(ConfigError, match="drop --layout"):
        load_dataset("digits", layout="chw")


# ---------------------------------------------------------------- batches and their indices


def test_indices_wrap_around_and_match_batch():
    images = np.arange(5, dtype=np.float32).reshape(5, 1, 1, 1) / 4
    ds = Dataset("five", images, np.arange(5, dtype=np.int64) * 2)
    assert ds.indices(3, 4).tolist() == [3, 4, 0, 1]
    x, y = ds.batch(3, 4)
    np.testing.assert_array_equal(x, images[[3, 4, 0, 1]])
    assert y.tolist() == [6, 8, 0, 2]
    assert ds.indices(0, 5).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("index, size, match", [(5, 1, "out of range"), (-1, 1, "out of range"),
                                                (0, 6, "asks for 6 samples but five holds 5"),
                                                (0, 0, "asks for 0 samples")])  # fmt: skip
def test_indices_out_of_range(index, size, match):
    ds = Dataset("five", np.zeros((5, 1, 2, 2), np.float32), np.zeros(5, np.int64))
    with pytest.raises(ConfigError, match=match):
        ds.indices(index, size)


def test_check_labels_names_classes():
    check_labels(np.array([0, 5]), 6, where="x.npz")
    with pytest.raises(ConfigError, match="raise --classes to at least 6"):
        check_labels(np.array([0, 5]), 5, where="x.npz")


# ---------------------------------------------------------------- user inputs read right


def _png(path, pixels, mode=None):
    img = Image.fromarray(pixels)
    (img.convert(mode) if mode else img).save(path)
    return path


def _decoded(path, mode):
    """Pillow's own decoding of a file (the source for lossy or converted formats), as float64 C×H×W."""
    pixels = np.asarray(Image.open(path).convert(mode), np.float64) / 255.0
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _npy(path, array):
    np.save(path, array)
    return path


def _folder(path, images):
    path.mkdir()
    for name, pixels in images.items():
        _png(path / name, pixels)
    (path / "notes.txt").write_text("not an image\n")  # ignored
    return path


def _glob(x):
    return (x - x.min()) / (x.max() - x.min())


RGB = U8.transpose(2, 0, 1) / 255.0  # the reference of U8 as C×H×W
READ = {
    # name: (make(tmp) -> path, load kwargs, reference N×C×H×W float64 (or callable(path)), labels)
    "png grey": (lambda p: _png(p / "g.png", U8[..., 0]), {}, U8[None, None, ..., 0] / 255.0, [0]),
    "png rgb": (lambda p: _png(p / "c.png", U8), {}, RGB[None], [0]),
    "png rgba (alpha dropped)": (lambda p: _png(p / "a.png", np.dstack([U8, U8[..., :1]])), {}, RGB[None], [0]),
    "png 16-bit grey": (lambda p: _png(p / "w.png", U16), {}, U16[None, None] / 65535.0, [0]),
    "png 1-bit": (lambda p: _png(p / "b.png", U8[..., 0] > 127), {}, (U8[None, None, ..., 0] > 127) * 1.0, [0]),
    "png grey+alpha": (lambda p: _png(p / "la.png", U8, "LA"), {}, lambda f: _decoded(f, "L")[None], [0]),
    "png palette": (lambda p: _png(p / "p.png", U8, "P"), {}, lambda f: _decoded(f, "RGB")[None], [0]),
    "jpeg rgb": (lambda p: _png(p / "c.jpg", U8), {}, lambda f: _decoded(f, "RGB")[None], [0]),
    "jpeg cmyk": (lambda p: _png(p / "k.jpg", U8, "CMYK"), {}, lambda f: _decoded(f, "RGB")[None], [0]),
    "npy uint8 hxw": (lambda p: _npy(p / "a.npy", U8[..., 0]), {}, U8[None, None, ..., 0] / 255.0, [0]),
    "npy uint16 hxwxc": (lambda p: _npy(p / "a.npy", U8.astype(np.uint16) * 257), {}, RGB[None], [0]),
    "npy big-endian uint16": (lambda p: _npy(p / "a.npy", U16.astype(">u2")), {}, U16[None, None] / 65535.0, [0]),
    "npy bool": (lambda p: _npy(p / "a.npy", U8[..., 0] > 127), {}, (U8[None, None, ..., 0] > 127) * 1.0, [0]),
    "npy float16": (lambda p: _npy(p / "a.npy", F[0, 0].astype(np.float16)), {},
                    F[:1, :1].astype(np.float16).astype(np.float64), [0]),  # fmt: skip
    "npy float32 cxhxw": (lambda p: _npy(p / "a.npy", F[0].astype(np.float32)), {},
                          F[:1].astype(np.float32).astype(np.float64), [0]),  # fmt: skip
    "npy float64 hxwxc": (lambda p: _npy(p / "a.npy", F[0].transpose(1, 2, 0)), {}, F[:1], [0]),
    "npy hxwx4 (alpha dropped)": (lambda p: _npy(p / "a.npy", np.dstack([U8, U8[..., :1]])), {}, RGB[None], [0]),
    "npy nxhxwxc": (lambda p: _npy(p / "a.npy", F.transpose(0, 2, 3, 1)), {}, F, [0, 0]),
    "npy nxcxhxw": (lambda p: _npy(p / "a.npy", F), {}, F, [0, 0]),
    "npy nxhxw": (lambda p: _npy(p / "a.npy", F[:, 0]), {}, F[:, :1], [0, 0]),
    "npy 3 grey images, --layout nhw": (lambda p: _npy(p / "a.npy", F[0]), {"layout": "nhw"}, F[0][:, None],
                                        [0, 0, 0]),  # fmt: skip
    "npy 3x5x3, --layout hwc": (lambda p: _npy(p / "a.npy", F[0, :, :, :3]), {"layout": "hwc"},
                                F[0, :, :, :3].transpose(2, 0, 1)[None], [0]),  # fmt: skip
    "npy float 0..255, --normalize (global)": (lambda p: _npy(p / "a.npy", F * [[[[255.0]]], [[[40.0]]]]),
                                               {"normalize": True}, _glob(F * [[[[255.0]]], [[[40.0]]]]),
                                               [0, 0]),  # fmt: skip
    "npy int64 0..255, --normalize": (lambda p: _npy(p / "a.npy", U8.astype(np.int64)), {"normalize": True},
                                      _glob(RGB)[None], [0]),  # fmt: skip
    "npz x and y": (lambda p: np.savez(p / "a.npz", x=F, y=np.array([3, 4])) or p / "a.npz", {}, F, [3, 4]),
    "npz integral float labels": (lambda p: np.savez(p / "a.npz", x=F, y=np.array([1.0, 2.0])) or p / "a.npz", {},
                                  F, [1, 2]),  # fmt: skip
    "npz without y": (lambda p: np.savez(p / "a.npz", x=F) or p / "a.npz", {}, F, [0, 0]),
    "npz 4x5x6 with 4 labels: y decides nhw": (lambda p: _npz(p / "a.npz", x=F[:, :2].reshape(4, 5, 6),
                                                              y=np.arange(4)), {},
                                               F[:, :2].reshape(4, 1, 5, 6), [0, 1, 2, 3]),  # fmt: skip
    "npz 3x5x6 with 1 label: y decides chw": (lambda p: _npz(p / "a.npz", x=F[0], y=np.array([2])), {}, F[:1],
                                              [2]),  # fmt: skip
    "npz 3x5x3 with 3 labels: y resolves the ambiguity": (lambda p: _npz(p / "a.npz", x=F[0, :, :, :3],
                                                                         y=np.arange(3)), {},
                                                          F[0, :, :, :3][:, None], [0, 1, 2]),  # fmt: skip
    "folder of grey pngs": (lambda p: _folder(p / "d", {"1.png": U8[..., 1], "0.png": U8[..., 0]}), {},
                            U8.transpose(2, 0, 1)[:2, None] / 255.0, [0, 0]),  # fmt: skip
    "folder of grey and rgb (grey repeated)": (lambda p: _folder(p / "d", {"0.png": U8[..., 0], "1.png": U8}), {},
                                               np.stack([np.repeat(RGB[:1], 3, axis=0), RGB]), [0, 0]),  # fmt: skip
}


@pytest.mark.parametrize("case", list(READ))
def test_user_input_is_read_right(tmp_path, case):
    make, kwargs, reference, labels = READ[case]
    path = make(tmp_path)
    ds = load_path(path, **kwargs)
    expected = reference(path) if callable(reference) else np.asarray(reference, np.float64)
    assert ds.images.dtype == np.float32 and ds.images.shape == expected.shape
    np.testing.assert_allclose(ds.images.astype(np.float64), expected, rtol=0, atol=FLOAT32_TOL)
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == labels


# ---------------------------------------------------------------- user inputs refused in one line


def _write(path, data):
    path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
    return path


def _gif(path):
    frames = [Image.fromarray(np.full((4, 4), 60 * i, np.uint8)) for i in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return path


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


PNG_BYTES = b"\x89PNG\r\n\x1a\n"
REFUSED = {
    # name: (make(tmp) -> path, load kwargs, error class, text the one-line message must hold)
    "missing file": (lambda p: p / "missing.png", {}, DataError, "no such file"),
    "text named .png": (lambda p: _write(p / "t.png", "hello\nworld\n"), {}, DataError, "give a PNG/JPEG file"),
    "empty .png": (lambda p: _write(p / "e.png", b""), {}, DataError, "give a PNG/JPEG file"),
    "truncated png": (lambda p: _write(p / "t.png", PNG_BYTES + b"\x00" * 30), {}, DataError, "give a PNG/JPEG"),
    "text named .jpg": (lambda p: _write(p / "t.jpg", "x"), {}, DataError, "give a PNG/JPEG file"),
    "animated gif named .png": (lambda p: _gif(p / "a.png"), {}, DataError, "its own file"),
    "unsupported suffix": (lambda p: _write(p / "a.txt", "x"), {}, DataError, "unsupported file type"),
    "text named .npy": (lambda p: _write(p / "a.npy", "1 2 3\n"), {}, DataError, "numpy.save"),
    "text named .npz": (lambda p: _write(p / "a.npz", "1 2 3\n"), {}, DataError, "numpy.save"),
    "zip-like .npz": (lambda p: _write(p / "a.npz", b"PK\x03\x04broken"), {}, DataError, "numpy.save"),
    "int64 0..255": (lambda p: _npy(p / "a.npy", U8.astype(np.int64)), {}, DataError, "cast to uint8"),
    "int8": (lambda p: _npy(p / "a.npy", U8[..., 0].astype(np.int8)), {}, DataError, "cast to uint8"),
    "int32": (lambda p: _npy(p / "a.npy", U8[..., 0].astype(np.int32)), {}, DataError, "cast to uint8"),
    "uint32": (lambda p: _npy(p / "a.npy", U8[..., 0].astype(np.uint32)), {}, DataError, "cast to uint8"),
    "uint64": (lambda p: _npy(p / "a.npy", U8[..., 0].astype(np.uint64)), {}, DataError, "cast to uint8"),
    "float 0..255": (lambda p: _npy(p / "a.npy", F * 255), {}, DataError, "--normalize"),
    "float below 0": (lambda p: _npy(p / "a.npy", F - 0.5), {}, DataError, "--normalize"),
    "float NaN": (lambda p: _npy(p / "a.npy", np.where(F > 0.5, np.nan, F)), {}, DataError, "NaN"),
    "float inf, --normalize": (lambda p: _npy(p / "a.npy", np.where(F > 0.5, np.inf, F)), {"normalize": True},
                               DataError, "NaN or inf"),  # fmt: skip
    "complex": (lambda p: _npy(p / "a.npy", F + 0j), {}, DataError, "real values"),
    "object": (lambda p: np.save(p / "a.npy", np.array([1.0, "x"], dtype=object)) or p / "a.npy", {}, DataError,
               "save a numeric array"),  # fmt: skip
    "strings": (lambda p: _npy(p / "a.npy", np.array([["a", "b"], ["c", "d"]])), {}, DataError, "uint8, uint16"),
    "constant, --normalize": (lambda p: _npy(p / "a.npy", np.full((4, 4), 7.0)), {"normalize": True}, DataError,
                              "drop --normalize"),  # fmt: skip
    "empty batch": (lambda p: _npy(p / "a.npy", np.zeros((0, 5, 5))), {}, DataError, "non-empty image"),
    "zero-width image": (lambda p: _npy(p / "a.npy", np.zeros((5, 0))), {}, DataError, "non-empty image"),
    "1-D array": (lambda p: _npy(p / "a.npy", np.zeros(5)), {}, DataError, "2-D to 4-D"),
    "5-D array": (lambda p: _npy(p / "a.npy", np.zeros((1, 2, 3, 4, 5))), {}, DataError, "2-D to 4-D"),
    "3-D ambiguous 3x5x3": (lambda p: _npy(p / "a.npy", F[0, :, :, :3]), {}, DataError, "pass --layout"),
    "4-D ambiguous 2x3x5x3": (lambda p: _npy(p / "a.npy", F[:, :, :, :3]), {}, DataError, "pass --layout"),
    "4-D without channel axis": (lambda p: _npy(p / "a.npy", np.zeros((2, 5, 5, 5))), {}, DataError, "1, 3 or 4"),
    "--layout chw on 2-D": (lambda p: _npy(p / "a.npy", F[0, 0]), {"layout": "chw"}, DataError, "--layout"),
    "--layout hwc with 6 channels": (lambda p: _npy(p / "a.npy", F[0].transpose(1, 2, 0)[..., :2].repeat(3, -1)),
                                     {"layout": "hwc"}, DataError, "check --layout"),  # fmt: skip
    "--layout on a png": (lambda p: _png(p / "c.png", U8), {"layout": "hwc"}, ConfigError, "drop --layout"),
    "unknown --layout": (lambda p: _npy(p / "a.npy", F), {"layout": "whc"}, ConfigError, "use one of auto"),
    "npz without x": (lambda p: _npz(p / "a.npz", z=F), {}, DataError, "no array 'x'"),
    "npz negative label": (lambda p: _npz(p / "a.npz", x=F, y=np.array([0, -1])), {}, DataError, "negative"),
    "npz fractional label": (lambda p: _npz(p / "a.npz", x=F, y=np.array([0.0, 1.5])), {}, DataError,
                             "integer class labels"),  # fmt: skip
    "npz NaN label": (lambda p: _npz(p / "a.npz", x=F, y=np.array([0.0, np.nan])), {}, DataError, "whole number"),
    "npz one-hot labels": (lambda p: _npz(p / "a.npz", x=F, y=np.eye(2)), {}, DataError, "one integer class"),
    "npz 4x5x6 with 3 labels": (lambda p: _npz(p / "a.npz", x=F[:, :2].reshape(4, 5, 6), y=np.arange(3)), {},
                                DataError, "y holds 3 labels but x of shape (4, 5, 6) reads as"),  # fmt: skip
    "npz string labels": (lambda p: _npz(p / "a.npz", x=F, y=np.array(["a", "b"])), {}, DataError, "integers >= 0"),
    "folder of mixed sizes": (lambda p: _folder(p / "d", {"a.png": U8, "b.png": U8[:4]}), {}, DataError,
                              "resize them to one H×W"),  # fmt: skip
    "folder without images": (lambda p: _folder(p / "d", {}), {}, DataError, "holds no images"),
    "folder with a broken image": (lambda p: _write(_folder(p / "d", {"a.png": U8}) / "b.png", "x").parent, {},
                                   DataError, "give a PNG/JPEG file"),  # fmt: skip
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_user_input_is_refused_in_one_line(tmp_path, case):
    make, kwargs, error, needle = REFUSED[case]
    with pytest.raises(error) as info:
        load_path(make(tmp_path), **kwargs)
    message = str(info.value)
    assert needle in message and "\n" not in message and "pip install" not in message, message


# ---------------------------------------------------------------- the command line


def test_layout_reaches_the_audit(tmp_path, capsys):
    np.save(tmp_path / "a.npy", F[0])  # 3×5×6: one RGB image by the auto rule, three grey ones with --layout nhw
    widths = []
    for extra in ([], ["--layout", "nhw"]):
        assert main(["audit", "--model", "mlp", "--hidden", "4", "--data", str(tmp_path / "a.npy"), "--json",
                     *extra]) == 0  # fmt: skip
        widths.append(json.loads(capsys.readouterr().out)["layers"][0]["unknowns"])
    assert widths == [3 * 5 * 6, 5 * 6]


def test_normalize_is_recorded_in_the_result(tmp_path, capsys):
    np.save(tmp_path / "a.npy", F[0, 0] * 255)
    argv = ["attack", "--model", "mlp", "--hidden", "4", "--iterations", "1", "--json", "--data",
            str(tmp_path / "a.npy"), "--normalize"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["config"]["normalize"] is True


CLI_BAD = {
    "int64.npy": (lambda p: _npy(p / "int64.npy", U8.astype(np.int64)), [], "cast to uint8"),
    "text.png": (lambda p: _write(p / "text.png", "hello\n"), [], "give a PNG/JPEG file"),
    "ambiguous.npy": (lambda p: _npy(p / "ambiguous.npy", F[0, :, :, :3]), [], "--layout"),
    "negative.npz": (lambda p: _npz(p / "negative.npz", x=F, y=np.array([-1, 0])), [], "negative"),
    "label 12.npz": (lambda p: _npz(p / "twelve.npz", x=F, y=np.array([12, 0])), [], "--classes"),
    "float 0..255.npy": (lambda p: _npy(p / "f.npy", F * 255), ["--layout", "nchw"], "--normalize"),
}


@pytest.mark.parametrize("case", list(CLI_BAD))
def test_cli_refuses_bad_data_in_one_line(tmp_path, case):
    make, extra, needle = CLI_BAD[case]
    out = tmp_path / "out"
    argv = ["attack", "--model", "mlp", "--hidden", "4", "--iterations", "1", "--data", str(make(tmp_path)),
            "--out", str(out), *extra]  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "he_leak", *argv], capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == "" and not out.exists()
