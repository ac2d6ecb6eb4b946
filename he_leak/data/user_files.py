"""A user's own data (`--data PATH`) read to N×C×H×W float32 images in [0,1] and int64 labels, or refused.

Every rule below is checked; anything else is refused with one line naming the fix, never guessed silently.

- Files: an image (PNG, JPEG, BMP, TIFF), a .npy array, a .npz holding `x` (images) and optionally `y` (labels;
  other keys are ignored), or a folder of images. Labels are 0 unless a .npz gives `y`.
- Pixel values by dtype: uint8 is divided by 255, uint16 by 65535, bool becomes 0/1, float must already lie in [0, 1].
  Other integer dtypes (int8 to int64, uint32, uint64) have no fixed range and are refused: cast to uint8 (values
  0-255) or uint16 (0-65535), or to float in [0, 1]. Complex, object, string, NaN and inf values are refused.
- `--normalize` rescales the whole array (all images together, never each image alone) to [0, 1] by its global
  minimum and maximum, whatever its real dtype; a constant array is refused (there is no range to rescale). The
  flag is part of the run's config, so it is recorded in the Result.
- Array layout (`--layout`, default auto): 2-D is H×W; 3-D is H×W×C if the last axis is 1, 3 or 4, C×H×W if only
  the first axis is 1 or 3, otherwise N×H×W; 4-D is N×H×W×C if the last axis is 1, 3 or 4, N×C×H×W if only axis 1
  is. Shapes where both candidate axes are 1, 3 or 4 (e.g. 3×32×3) are refused as ambiguous: pass --layout; so is
  4×H×W (one RGBA image whose alpha would be dropped, or four grey images). So a (3, 32, 32) array is one RGB image
  and three grey images need `--layout nhw`; a sample index or batch beyond the images read names the layout taken
  and the one that reads more images. When a .npz gives `y`, its label
  count decides first: of the layouts the shape allows (channel axis of size 1, 3 or 4), the one whose image count
  equals len(y) is taken — so (4, 16, 16) with 4 labels is four grey images — and a shape no layout reconciles with
  len(y) is refused naming both. An explicit layout (hw, hwc, chw, nhw, nhwc, nchw) overrides the rule and must match
  the array's rank; --layout applies to .npy/.npz only.
- Channels: 1 is grey, 3 is RGB, 4 is RGBA whose alpha is dropped (not composited); any other count is refused.
- Image files are read with Pillow: mode 1 is bool, L is uint8, I;16 is uint16, I (int32) and F (float32) follow
  the dtype rules, LA loses its alpha, palette, RGBA, CMYK and YCbCr images become RGB. Multi-frame files
  (animated GIF, TIFF stacks) are refused. A file Pillow cannot decode is refused whatever its suffix says.
- Folders: every file with an image suffix, in name order (other files and sub-folders are ignored); all must share
  one H×W; grey images are repeated to three channels when the folder also holds colour images.
- Labels (`y`): one per image, non-negative whole numbers (float labels are accepted only when integral); the
  runner checks them against --classes (he_leak.data.check_labels).
- Empty arrays, zero-size images and empty folders are refused.
"""

from __future__ import annotations

from pathlib import Path
from zipfile import BadZipFile

import numpy as np

from he_leak.config import LAYOUTS
from he_leak.errors import ConfigError, DataError
from he_leak.text import one_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
CHANNELS = (1, 3, 4)  # grey, RGB, RGBA (alpha dropped)
_KEEP_MODES = ("1", "L", "I", "F", "RGB")  # Pillow modes read as they are; LA -> L, everything else -> RGB
_INT_FIX = "cast to uint8 (values 0-255) or uint16 (0-65535), or to float in [0, 1], or pass --normalize"


def read_user_data(path: Path, *, layout: str = "auto",
                   normalize: bool = False) -> tuple[np.ndarray, np.ndarray, str]:  # fmt: skip
    """Images (N×C×H×W float32 in [0,1]) and labels (N int64) from a user file or folder, by the module's rules, and
    a note on how an array was read when another layout would read more images ("" otherwise: see `layout_note`)."""
    if layout not in LAYOUTS:
        raise ConfigError(f"--layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    if not path.exists():
        raise DataError(f"no such file or folder: {path}")
    suffix, where = path.suffix.lower(), str(path)
    if path.is_dir() or suffix in IMAGE_SUFFIXES:
        if layout != "auto":
            raise ConfigError(f"--layout {layout} applies to .npy/.npz arrays; {path} is read as H×W(×C) images "
                              "(drop --layout)")  # fmt: skip
        raw = read_folder(path) if path.is_dir() else [read_image(path)]
        images = stack_images([scaled(img, normalize=normalize, where=where) for img in raw], where=where)
        return finish(images, normalize=normalize, where=where), np.zeros(len(images), np.int64), ""
    if suffix in (".npy", ".npz"):
        x, y = _load_numpy(path)
        count = None if y is None else int(np.asarray(y).size)
        pixels = scaled(to_nchw(x, layout, where=where, count=count), normalize=normalize, where=where)
        images = finish(pixels, normalize=normalize, where=where)
        labels = np.zeros(len(images), np.int64) if y is None else read_labels(y, len(images), where=where)
        return images, labels, layout_note(np.shape(x), layout, count=count)
    raise DataError(f"{path}: unsupported file type {suffix!r}; use PNG/JPEG, .npy, .npz or a folder of images")


def _load_numpy(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """`x` (and `y` or None) from a .npy array or a .npz archive (told apart by content), never unpickling."""
    unreadable = f"cannot read {path} as a NumPy array; give a file written by numpy.save or numpy.savez"
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.ndarray):
            return data, None
        with data as z:
            if "x" not in z.files:
                raise DataError(f"{path} has no array 'x' (found: {', '.join(z.files) or 'none'}); "
                                "save it with numpy.savez(path, x=images, y=labels)")  # fmt: skip
            return z["x"], (z["y"] if "y" in z.files else None)
    except DataError:
        raise
    except ValueError as e:
        if "Object arrays" in str(e):
            raise DataError(f"{path} holds Python objects (dtype object); save a numeric array (uint8, uint16, "
                            "bool or float in [0, 1])") from None  # fmt: skip
        raise DataError(unreadable) from None
    except (OSError, EOFError, BadZipFile):
        raise DataError(unreadable) from None


def read_image(path: Path) -> np.ndarray:
    """One image file as C×H×W pixels of its own dtype (uint8, uint16, bool, int32 or float32), alpha dropped."""
    # Pillow directly rather than skimage/imageio: imageio 2.38 returns a CMYK JPEG as 4 raw channels (which would
    # pass for RGBA) and an LA PNG as a wrongly shaped array, and its errors are multi-line plugin-install advice.
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            frames = getattr(img, "n_frames", 1)
            keep = img.mode in _KEEP_MODES or img.mode.startswith("I;16")
            pixels = np.asarray(img if keep else img.convert("L" if img.mode in ("LA", "La") else "RGB"))
    except Image.DecompressionBombError as e:  # a valid image over Pillow's pixel limit (a decompression-bomb guard)
        raise DataError(f"image {path} is over Pillow's pixel limit ({one_line(e)}); resize it to fewer pixels, or "
                        "raise PIL.Image.MAX_IMAGE_PIXELS in code if you trust the file") from None  # fmt: skip
    except (OSError, ValueError, SyntaxError, EOFError, UnidentifiedImageError):
        raise DataError(f"cannot read image {path}; give a PNG/JPEG file") from None
    if frames > 1:
        raise DataError(f"{path} holds {frames} frames; save each image to its own file")
    if pixels.size == 0:
        raise DataError(f"image {path} has no pixels ({pixels.shape}); give a non-empty image")
    return pixels[None] if pixels.ndim == 2 else np.moveaxis(pixels, -1, 0)


def read_folder(path: Path) -> list[np.ndarray]:
    """Every image file in a folder (name order); other files are ignored."""
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return [read_image(p) for p in files]


def stack_images(images: list[np.ndarray], *, where: str) -> np.ndarray:
    """C×H×W float images as one N×C×H×W array; grey is repeated to RGB when colour images are present."""
    if len({img.shape[1:] for img in images}) != 1:
        sizes = sorted({f"{img.shape[1]}×{img.shape[2]}" for img in images})
        raise DataError(f"images in {where} differ in size ({', '.join(sizes)}); resize them to one H×W")
    channels = max(img.shape[0] for img in images)
    return np.stack([np.repeat(img, channels, axis=0) if len(img) < channels else img for img in images])


def resolve_layout(shape: tuple[int, ...], layout: str, *, where: str, count: int | None = None) -> str:
    """The explicit layout checked against the shape, or the auto rule's choice (module docstring); `count`, the
    number of labels a .npz gives, decides first between the layouts the shape allows."""
    if layout == "auto":
        layout = _by_label_count(shape, count, where=where) if count is not None else None
        layout = layout or _auto_layout(shape, where=where)
    if len(shape) != len(layout):
        raise DataError(f"{where}: --layout {layout} needs a {len(layout)}-D array, got shape {shape}; "
                        "pass the --layout that matches it")  # fmt: skip
    if "c" in layout and shape[layout.index("c")] not in CHANNELS:
        raise DataError(f"{where}: the C axis of {layout} has {shape[layout.index('c')]} channels in shape "
                        f"{shape}; channels must be 1, 3 or 4 (check --layout)")  # fmt: skip
    return layout


def layout_note(shape: tuple[int, ...], layout: str, *, count: int | None = None) -> str:
    """How the auto layout read an array when another layout of its shape reads more images (e.g. "read as chw (1
    image); --layout nhw reads 3"), for errors about sample indices; "" for an explicit layout or no such reading."""
    if layout != "auto":
        return ""
    chosen = resolve_layout(shape, "auto", where="", count=count)
    images = shape[0] if "n" in chosen else 1
    more = [lay for lay in _candidates(shape) if "n" in lay and shape[0] > images]
    if not more:
        return ""
    return f"read as {chosen} ({images} image{'s' if images != 1 else ''}); --layout {more[0]} reads {shape[0]}"


def _candidates(shape: tuple[int, ...]) -> list[str]:
    """The layouts of the array's rank whose channel axis (if any) has 1, 3 or 4 entries."""
    layouts = {2: ["hw"], 3: ["hwc", "chw", "nhw"], 4: ["nhwc", "nchw"]}.get(len(shape), [])
    return [lay for lay in layouts if "c" not in lay or shape[lay.index("c")] in CHANNELS]


def _by_label_count(shape: tuple[int, ...], count: int, *, where: str) -> str | None:
    """The layout whose image count equals `count` when exactly one does; None when several do (the shape rule
    decides); DataError when none does."""
    fits = [lay for lay in _candidates(shape) if (shape[0] if "n" in lay else 1) == count]
    if len(fits) == 1:
        return fits[0]
    if not fits and _candidates(shape):
        readings = ", ".join(f"{lay}: {shape[0] if 'n' in lay else 1} image(s)" for lay in _candidates(shape))
        raise DataError(f"{where}: y holds {count} labels but x of shape {shape} reads as {readings}; give one "
                        "integer class per image (not one-hot), or pass --layout")  # fmt: skip
    return None


def _auto_layout(shape: tuple[int, ...], *, where: str) -> str:
    if len(shape) == 2:
        return "hw"
    if len(shape) == 3:
        first, last = shape[0] in CHANNELS, shape[-1] in CHANNELS
        if first and last:
            raise DataError(f"{where}: shape {shape} is ambiguous (channels first or last?); pass --layout hwc, "
                            "chw or nhw")  # fmt: skip
        if first and not last and shape[0] == 4:  # RGBA would drop the fourth image as alpha: never silently
            raise DataError(f"{where}: shape {shape} is one RGBA image (its alpha dropped) or 4 grey images; pass "
                            "--layout chw or --layout nhw")  # fmt: skip
        return "hwc" if last else "chw" if first else "nhw"
    if len(shape) == 4:
        second, last = shape[1] in CHANNELS, shape[-1] in CHANNELS
        if second and last:
            raise DataError(f"{where}: shape {shape} is ambiguous (channels first or last?); pass --layout nhwc "
                            "or nchw")  # fmt: skip
        if not (second or last):
            raise DataError(f"{where}: shape {shape} has no channel axis of size 1, 3 or 4; give N×H×W×C or "
                            "N×C×H×W images with 1, 3 or 4 channels")  # fmt: skip
        return "nhwc" if last else "nchw"
    raise DataError(f"{where}: an array of shape {shape} is not an image or a batch of images; give a 2-D to 4-D "
                    "array (H×W, H×W×C, C×H×W, N×H×W, N×H×W×C or N×C×H×W)")  # fmt: skip


def to_nchw(x: np.ndarray, layout: str, *, where: str, count: int | None = None) -> np.ndarray:
    """A user array as N×C×H×W in its own dtype (alpha dropped), after checking that it holds pixel data; `count`:
    the number of labels given with it (see resolve_layout)."""
    x = np.asarray(x)
    _check_kind(x.dtype, where=where)
    if x.size == 0:
        raise DataError(f"{where}: the array of shape {x.shape} is empty; give at least one non-empty image")
    axes = resolve_layout(x.shape, layout, where=where, count=count)
    if "n" not in axes:
        x, axes = x[None], "n" + axes
    if "c" not in axes:
        x, axes = x[..., None], axes + "c"
    x = np.transpose(x, [axes.index(a) for a in "nchw"])
    return x[:, :3] if x.shape[1] == 4 else x


def _check_kind(dtype: np.dtype, *, where: str) -> None:
    if dtype.kind == "c":
        raise DataError(f"{where}: complex values ({dtype}) are not pixels; give real values (e.g. abs() or .real)")
    if dtype.kind not in "biuf":
        raise DataError(f"{where}: dtype {dtype} is not pixel data; give uint8, uint16, bool or float in [0, 1]")


def scaled(x: np.ndarray, *, normalize: bool, where: str) -> np.ndarray:
    """Pixels as float64 by their dtype (uint8 /255, uint16 /65535, bool 0/1, float as is); other integer dtypes
    are refused unless `normalize` (their raw values are then rescaled by `finish`). NaN/inf are refused."""
    _check_kind(x.dtype, where=where)
    if x.dtype.kind == "b":
        return x.astype(np.float64)
    if x.dtype.kind == "u" and x.dtype.itemsize in (1, 2):
        return x.astype(np.float64) / float(np.iinfo(x.dtype).max)
    if x.dtype.kind in "iu" and not normalize:
        raise DataError(f"{where}: {x.dtype} pixels have no fixed range; {_INT_FIX}")
    out = x.astype(np.float64)
    if not np.isfinite(out).all():
        raise DataError(f"{where}: the data holds NaN or inf values; replace them with numbers in [0, 1]")
    return out


def finish(x: np.ndarray, *, normalize: bool, where: str) -> np.ndarray:
    """float64 pixels checked to lie in [0, 1], or with `normalize` rescaled by the global min/max; as float32."""
    lo, hi = float(x.min()), float(x.max())
    if normalize:
        if hi == lo:
            raise DataError(f"{where}: every value is {lo:g}, so --normalize has no range to rescale; drop "
                            "--normalize (values must then lie in [0, 1])")  # fmt: skip
        x = (x - lo) / (hi - lo)
    elif lo < 0 or hi > 1:
        raise DataError(f"{where}: values span [{lo:.6g}, {hi:.6g}], outside [0, 1]; scale them to [0, 1] (e.g. "
                        "divide 0-255 data by 255) or pass --normalize to rescale by the global min/max")  # fmt: skip
    return np.ascontiguousarray(x, dtype=np.float32)


def read_labels(y: np.ndarray, count: int, *, where: str) -> np.ndarray:
    """One non-negative whole-number label per image (float labels only when integral) as int64."""
    y = np.asarray(y)
    if y.size != count:
        raise DataError(f"{where}: y holds {y.size} labels for {count} images; give one integer class per image "
                        "(not one-hot)")  # fmt: skip
    y = y.reshape(-1)
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{where}: label y[{i}] = {float(y[i])} is not a whole number; give integer class labels")
    elif y.dtype.kind not in "biu":
        raise DataError(f"{where}: labels of dtype {y.dtype} are not class numbers; give integers >= 0")
    if y.size and y.min() < 0:
        i = int(np.argmin(y))
        raise DataError(f"{where}: label y[{i}] = {int(y[i])} is negative; labels are class numbers 0, 1, 2, …")
    if y.dtype.kind == "u" and y.size and int(y.max()) > np.iinfo(np.int64).max:
        raise DataError(f"{where}: label {int(y.max())} is too large; labels are class numbers 0, 1, 2, …")
    return y.astype(np.int64)
