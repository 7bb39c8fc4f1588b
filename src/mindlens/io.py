"""Read images from disk or memory into float arrays, and say exactly what is wrong.

Images become ``float32`` NumPy arrays ``[H, W, C]`` with values in ``[0, 1]``; ``C`` is 1
(grayscale), 3 (RGB) or 4 (RGBA). 8-bit and 16-bit files are scaled by their own range.

Limits, so that no file costs more than its use: a file of more than ``max_pixels`` pixels
(default :data:`DEFAULT_MAX_PIXELS`, 50 megapixels; ``--max-pixels`` on the CLI) is refused
from its header, before any pixel is decoded; a larger-than-needed image is shrunk while it
is read (JPEG: decoded at 1/2, 1/4 or 1/8 scale by Pillow's ``draft``; other formats:
box-averaged by ``Image.reduce``) to no less than twice the model's input size, so memory
follows the model's input size, not the file's. Transparency of every kind (palette
``tRNS``, LA, RGBA) becomes an alpha channel, composited on white by
:func:`match_channels`. A multi-frame file (animated GIF, multi-page TIFF) uses its first
frame, with a warning that says so.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputError, InputWarning

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")
#: the largest image (width x height) read unless the caller allows more
DEFAULT_MAX_PIXELS = 50_000_000
MAX_PIXELS = DEFAULT_MAX_PIXELS


def set_max_pixels(limit: int) -> None:
    """Change the process-wide pixel limit (the CLI's ``--max-pixels``)."""
    global MAX_PIXELS
    if limit < 1:
        raise InputError(f"the pixel limit must be positive, got {limit}")
    MAX_PIXELS = int(limit)
    # Pillow refuses files over twice its own limit before we see the header
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, MAX_PIXELS)


def display_name(path: str | Path) -> str:
    """A file name fit for HTML, CSV and JSON: bytes that are not UTF-8 (allowed in POSIX
    file names) shown as ``\\xNN`` escapes instead of breaking the writer."""
    raw = os.fsencode(str(path))
    return raw.decode("utf-8", "backslashreplace")


def read_image(path: str | Path, size: tuple[int, ...] | None = None,
               max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as ``float32 [H, W, C]`` in ``[0, 1]``.

    ``size``: the ``(H, W)`` the image will be resized to; a file more than twice as large
    is shrunk while it is read. ``max_pixels``: refuse larger files (default
    :data:`MAX_PIXELS`).
    """
    path = Path(path)
    name = display_name(path)
    if not path.exists():
        raise InputError(f"image file not found: {name}")
    if path.is_dir():
        raise InputError(f"{name} is a folder, not an image file")
    if path.stat().st_size == 0:
        raise InputError(f"image file is empty (0 bytes): {name}")
    limit = _pillow_limit(max_pixels)
    with _opened(path, name, limit) as img:
        frames = getattr(img, "n_frames", 1)
        if frames > 1:
            warnings.warn(InputWarning(
                f"{name} has {frames} frames (an animation or a multi-page file); "
                f"mindlens uses frame 1, the first"), stacklevel=2)
        if size is not None and img.format == "JPEG":
            img.draft(img.mode, (2 * size[-1], 2 * size[-2]))
        img.load()
        return pil_to_array(shrink(img, size), source=name)


@contextmanager
def _opened(path: Path, name: str, limit: int) -> Iterator[Image.Image]:
    """The open image file, its pixel count checked from the header; whatever Pillow
    raises while it is read becomes one :class:`InputError` naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                check_pixels(img.width, img.height, limit, name)
                yield img
    except Image.DecompressionBombError as err:
        raise _bomb(name, err, limit) from None
    except UnidentifiedImageError:
        raise InputError(
            f"cannot read {name}: not an image format mindlens knows "
            f"(use one of {', '.join(IMAGE_SUFFIXES)})"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        if isinstance(err, InputError):
            raise
        raise InputError(f"cannot read {name}: the file is corrupt or truncated "
                         f"({' '.join(str(err).split())})") from None


def probe_image(path: str | Path, max_pixels: int | None = None) -> None:
    """Check without decoding the pixels that ``path`` is an image mindlens can read: it
    exists, is not empty, has a known format, is within the pixel limit and its structure
    is sound (Pillow's ``verify``: PNG chunk checksums, truncation). Raises
    :class:`InputError` naming the file and the reason."""
    path = Path(path)
    name = display_name(path)
    if not path.is_file():
        raise InputError(f"image file not found: {name}")
    if path.stat().st_size == 0:
        raise InputError(f"image file is empty (0 bytes): {name}")
    with _opened(path, name, _pillow_limit(max_pixels)) as img:
        img.verify()


def readable(paths: list[Path], max_pixels: int | None = None, what: str = "images"
             ) -> list[Path]:
    """The image files of ``paths`` that :func:`probe_image` accepts; every other one is
    skipped with an :class:`~mindlens.errors.InputWarning` that names it and says why. If
    none is readable: one :class:`InputError` with the first reason (no warnings)."""
    keep, bad = [], []
    for path in paths:
        try:
            probe_image(path, max_pixels)
        except InputError as err:
            bad.append((path, err))
            continue
        keep.append(path)
    if paths and not keep:
        raise InputError(f"none of the {len(paths)} {what} can be read ({bad[0][1]})")
    for path, err in bad:
        warnings.warn(InputWarning(f"skipped {display_name(path)}: {err}"), stacklevel=2)
    return keep


def _pillow_limit(max_pixels: int | None) -> int:
    """The pixel limit of one read; Pillow's own bomb check (which fires at twice
    ``Image.MAX_IMAGE_PIXELS`` while the header is read) is raised to it if lower, so a
    limit the caller chose is the one that applies."""
    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    if Image.MAX_IMAGE_PIXELS is not None and limit > 2 * Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit
    return limit


def _bomb(name: str, err: Exception, limit: int) -> InputError:
    """Pillow refused a header that claims too many pixels: say so in mindlens' words."""
    found = re.search(r"\((\d+) pixels\)", str(err))
    claim = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    return InputError(
        f"{name} claims {claim}, over the limit of {limit:,} (a decompression bomb or a "
        f"needlessly large file); shrink it, or raise the limit with --max-pixels "
        f"(max_pixels= in the API) if you trust it")


def check_pixels(width: int, height: int, limit: int | None, source: str) -> None:
    """Refuse an image of more than ``limit`` pixels (default :data:`MAX_PIXELS`), from its
    header, before decoding."""
    limit = MAX_PIXELS if limit is None else limit
    if width * height > limit:
        raise InputError(
            f"{source} is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{limit:,} (a decompression bomb or a needlessly large file); shrink "
            f"it, or raise the limit with --max-pixels "
            f"(max_pixels= in the API) if you trust it")


def shrink(img: Image.Image, size: tuple[int, ...] | None) -> Image.Image:
    """Box-average ``img`` by the largest integer factor that keeps it at least twice
    ``size`` (``(H, W)``) on both axes; modes Pillow cannot reduce are converted first."""
    if size is None or len(size) != 2:
        return img
    factor = min(img.width // (2 * size[1]), img.height // (2 * size[0]))
    if factor < 2:
        return img
    img = normal_mode(img)
    try:
        return img.reduce(factor)
    except ValueError:  # a mode reduce does not support: keep the full image
        return img


def normal_mode(img: Image.Image) -> Image.Image:
    """Palette, bilevel and exotic modes as L/LA/RGB/RGBA; transparency kept as alpha."""
    mode = img.mode
    transparent = "transparency" in img.info
    if mode in ("P", "PA"):
        return img.convert("RGBA" if transparent or mode == "PA" else "RGB")
    if mode == "1":
        return img.convert("L")
    if mode == "L" and transparent:
        return img.convert("LA")
    if mode == "RGB" and transparent:
        return img.convert("RGBA")
    if mode in ("CMYK", "YCbCr", "HSV", "LAB", "RGBX"):
        return img.convert("RGB")
    return img


def pil_to_array(img: Image.Image, source: str = "image") -> np.ndarray:
    """Convert a PIL image of any common mode to ``float32 [H, W, C]`` in ``[0, 1]``."""
    if img.width == 0 or img.height == 0:
        raise InputError(f"{source} has zero size ({img.width}x{img.height})")
    img = normal_mode(img)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.float32) / 65535.0
    elif mode == "I":
        data = np.asarray(img)
        top = 65535.0 if data.max(initial=0) > 255 else 255.0
        arr = data.astype(np.float32) / top
    elif mode == "F":
        arr = np.asarray(img, dtype=np.float32)
    elif mode == "L":
        arr = np.asarray(img, dtype=np.float32) / 255.0
    elif mode in ("LA", "RGBA"):
        arr = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
    else:
        arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return as_image_array(arr, source=source)


#: float pixels this far outside [0, 1] are rounding (e.g. from resampling) and are clipped
FLOAT_SLACK = 1e-3


def as_image_array(data: Any, source: str = "array") -> np.ndarray:
    """Validate an array-like image and return ``float32 [H, W, C]`` in ``[0, 1]``.

    Accepts ``[H, W]``, ``[H, W, C]`` with C in 1/3/4; integer arrays are scaled by their
    dtype's range (uint8 by 255, uint16 by 65535), bool arrays to 0/1. Float arrays must
    hold values in [0, 1]; one whose values are all whole numbers in 0..255 is taken as
    8-bit pixels and divided by 255, with a warning; any other float range is refused.
    """
    arr = np.asarray(data)
    if arr.dtype == object:
        raise InputError(f"{source}: cannot turn a {type(data).__name__} into an image array")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise InputError(
            f"{source} has shape {arr.shape}; an image must be [H, W] or [H, W, C]"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{source} has zero size ({arr.shape[1]}x{arr.shape[0]})")
    if arr.shape[2] not in (1, 3, 4):
        raise InputError(
            f"{source} has {arr.shape[2]} channels; mindlens reads grayscale (1), RGB (3) "
            f"or RGBA (4) images. For channels-first arrays, transpose to [H, W, C] first."
        )
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        top = float(np.iinfo(arr.dtype).max) if arr.dtype != np.int64 else 255.0
        if arr.dtype in (np.int32, np.int64) and arr.max(initial=0) > 255:
            top = 65535.0
        return arr.astype(np.float32) / top
    out = arr.astype(np.float32)
    if not np.isfinite(out).all():
        bad = int((~np.isfinite(out)).sum())
        raise InputError(f"{source} contains {bad} NaN or infinite pixel value(s); "
                         f"replace them (e.g. np.nan_to_num) before explaining")
    return _float_range(out, source)


def _float_range(out: np.ndarray, source: str) -> np.ndarray:
    lo, hi = float(out.min()), float(out.max())
    if lo >= -FLOAT_SLACK and hi <= 1 + FLOAT_SLACK:
        return out.clip(0.0, 1.0) if lo < 0 or hi > 1 else out
    if lo >= 0 and hi <= 255 and bool((out == np.round(out)).all()):
        warnings.warn(InputWarning(
            f"{source} is a float image with whole-number values 0..{hi:g}: read as 8-bit "
            f"pixels and divided by 255 (give floats in [0, 1] or a uint8 array to silence "
            f"this)"), stacklevel=3)
        return out / 255.0
    raise InputError(
        f"{source} is a float image with values in [{lo:g}, {hi:g}]; mindlens expects "
        f"floats in [0, 1]. Scale it first (e.g. x / 255 for 8-bit data, x / 65535 for "
        f"16-bit, (x - x.min()) / (x.max() - x.min()) for any range) or pass integers")


def match_channels(img: np.ndarray, channels: int, source: str = "image") -> np.ndarray:
    """Convert ``[H, W, C]`` to the channel count a model expects.

    RGBA drops alpha (composited on white), grayscale is repeated to RGB, RGB becomes
    luminance (ITU-R 601) for single-channel models.
    """
    c = img.shape[2]
    if c == 4:
        alpha = img[:, :, 3:4]
        img = img[:, :, :3] * alpha + (1.0 - alpha)
        c = 3
    if c == channels:
        return img
    if c == 1 and channels == 3:
        return np.repeat(img, 3, axis=2)
    if c == 3 and channels == 1:
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return (img @ weights)[:, :, None]
    raise InputError(
        f"{source} has {c} channels but the model expects {channels}; "
        f"give an image with 1, 3 or 4 channels"
    )


# -- volumes -------------------------------------------------------------------------------
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".npy")


def is_volume_path(path: str | Path) -> bool:
    """Whether a file name looks like a volume (NIfTI or NumPy)."""
    return str(path).lower().endswith(VOLUME_SUFFIXES)


def read_volume(path: str | Path) -> np.ndarray:
    """Read a 3-D volume as ``float32 [D, H, W]`` (or ``[C, D, H, W]``), raw intensities.

    NIfTI (``.nii``, ``.nii.gz``) through nibabel (the optional extra ``mindlens[volumes]``),
    with the file's scaling (``scl_slope``/``scl_inter``) applied; the axes stay in the
    file's voxel order ``(i, j, k)`` = ``(D, H, W)``, as ``nibabel.load(path).dataobj``
    gives them, so a NIfTI atlas lines up voxel by voxel. A 4-D NIfTI ``(i, j, k, c)``
    becomes channels-first ``[c, i, j, k]``. ``.npy``: ``[D, H, W]`` or ``[C, D, H, W]``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"volume file not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a volume file")
    if path.stat().st_size == 0:
        raise InputError(f"volume file is empty (0 bytes): {path}")
    name = path.name.lower()
    if name.endswith(".npy"):
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise InputError(f"cannot read {path} as a NumPy array: {err}") from None
        nifti = False
    elif name.endswith((".nii", ".nii.gz")):
        arr, nifti = _read_nifti(path), True
    else:
        raise InputError(
            f"cannot read {path} as a volume: use NIfTI (.nii, .nii.gz) or NumPy (.npy)"
        )
    return as_volume_array(arr, str(path), channels_last=nifti)


def _read_nifti(path: Path) -> np.ndarray:
    try:
        import nibabel
    except ImportError:
        raise InputError(
            f"reading NIfTI volumes such as {path.name} needs nibabel: "
            f"pip install 'mindlens[volumes]' (or save the volume as .npy)"
        ) from None
    try:
        img = nibabel.load(str(path))
        return np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as err:  # nibabel raises several of its own error types
        raise InputError(f"cannot read {path} as NIfTI: the file is corrupt ({err})") from None


def as_volume_array(data: Any, source: str = "volume", channels_last: bool = False
                    ) -> np.ndarray:
    """Validate a volume array: ``float32 [D, H, W]`` or ``[C, D, H, W]`` (``channels_last``:
    ``[D, H, W, C]`` is moved to channels-first); trailing singleton axes of 4-D+ NIfTI
    data are dropped."""
    arr = np.asarray(data)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(f"{source}: cannot turn a {arr.dtype} array into a volume")
    while arr.ndim > 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 4 and channels_last:
        arr = np.moveaxis(arr, -1, 0)
    if arr.ndim not in (3, 4):
        raise InputError(
            f"{source} has shape {arr.shape}; a volume must be [D, H, W] or [C, D, H, W]"
        )
    if 0 in arr.shape:
        raise InputError(f"{source} has zero size: {arr.shape}")
    out = arr.astype(np.float32)
    if not np.isfinite(out).all():
        raise InputError(f"{source} contains NaN or infinite values")
    return out


def volume_to_unit(vol: np.ndarray) -> np.ndarray:
    """Scale a volume's intensities to ``[0, 1]`` by its own range (min-max over the whole
    volume, all channels): scanner intensities have no fixed range, unlike 8-bit pixels.
    A constant volume becomes zeros."""
    lo, hi = float(vol.min()), float(vol.max())
    if hi - lo <= 0:
        return np.zeros_like(vol, dtype=np.float32)
    return ((vol - lo) / (hi - lo)).astype(np.float32)
