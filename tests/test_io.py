"""Reading images: every supported kind gives the right pixels, every bad one one clear
InputError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mindlens
from mindlens.io import as_image_array, read_image


def rgb_classifier(size: int = 6, channels: int = 3) -> mindlens.Classifier:
    """Identity normalisation, so model space equals pixels in [0, 1]."""
    return mindlens.Classifier(torch.nn.Sequential(torch.nn.Flatten(),
                                                   torch.nn.LazyLinear(2)),
                               (size, size), channels, mean=[0.0], std=[1.0])


def pattern(h: int = 6, w: int = 6) -> np.ndarray:
    return (np.arange(h * w * 3).reshape(h, w, 3) * 7 % 256).astype(np.uint8)


def test_rgb_png_and_jpeg(tmp_path: Path) -> None:
    arr = pattern()
    Image.fromarray(arr).save(tmp_path / "a.png")
    x = rgb_classifier().preprocess(tmp_path / "a.png")
    assert x.shape == (1, 3, 6, 6) and x.dtype == torch.float32
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), arr / 255.0, atol=1e-6)
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    assert rgb_classifier().preprocess(str(tmp_path / "a.jpg")).shape == (1, 3, 6, 6)


def test_grayscale_png_is_repeated_to_rgb_and_rgb_to_luminance(tmp_path: Path) -> None:
    gray = pattern()[:, :, 0]
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    x = rgb_classifier().preprocess(tmp_path / "g.png")
    for c in range(3):
        np.testing.assert_allclose(x[0, c].numpy(), gray / 255.0, atol=1e-6)
    Image.fromarray(pattern()).save(tmp_path / "c.png")
    y = rgb_classifier(channels=1).preprocess(tmp_path / "c.png")
    lum = pattern().astype(np.float32) / 255 @ np.array([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(y[0, 0].numpy(), lum, atol=1e-6)


def test_rgba_png_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:3, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "t.png")
    x = rgb_classifier().preprocess(tmp_path / "t.png")[0]
    assert torch.equal(x[:, :3], torch.tensor([1.0, 0, 0])[:, None, None].expand(3, 3, 6))
    assert torch.equal(x[:, 3:], torch.ones(3, 3, 6))


def test_sixteen_bit_png_uses_the_full_range(tmp_path: Path) -> None:
    data = np.linspace(0, 65535, 36).astype(np.uint16).reshape(6, 6)
    Image.fromarray(data).save(tmp_path / "d16.png")
    assert Image.open(tmp_path / "d16.png").mode.startswith("I")
    arr = read_image(tmp_path / "d16.png")
    np.testing.assert_allclose(arr[:, :, 0], data / 65535.0, atol=1e-6)
    x = rgb_classifier().preprocess(tmp_path / "d16.png")
    np.testing.assert_allclose(x[0, 1].numpy(), data / 65535.0, atol=1e-6)


@pytest.mark.parametrize("dtype,top", [(np.uint8, 255), (np.uint16, 65535)])
def test_integer_arrays_scale_by_their_range(dtype: type, top: int) -> None:
    arr = np.full((4, 5, 3), top // 3, dtype=dtype)
    out = as_image_array(arr)
    assert out.dtype == np.float32 and out.shape == (4, 5, 3)
    np.testing.assert_allclose(out, (top // 3) / top, rtol=1e-6)


def test_arrays_pil_and_resizing() -> None:
    clf = rgb_classifier(size=4)
    gray = np.random.default_rng(0).random((8, 8))
    x = clf.preprocess([gray, Image.fromarray(pattern(8, 8)), np.ones((8, 8, 4), bool)])
    assert x.shape == (3, 3, 4, 4)
    assert torch.allclose(x[2], torch.ones(3, 4, 4))
    normalised = mindlens.Classifier(torch.nn.Identity(), (4, 4), 3, mean=[0.5] * 3,
                                     std=[0.25] * 3)
    assert torch.allclose(normalised.preprocess(np.ones((4, 4, 3), np.float32)),
                          torch.full((1, 3, 4, 4), 2.0))


def test_missing_empty_and_folder(tmp_path: Path) -> None:
    clf = rgb_classifier()
    with pytest.raises(mindlens.InputError, match="not found"):
        clf.preprocess(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(mindlens.InputError, match="empty"):
        clf.preprocess(tmp_path / "empty.png")
    with pytest.raises(mindlens.InputError, match="folder"):
        clf.preprocess(tmp_path)
    (tmp_path / "notes.png").write_text("this is not an image")
    with pytest.raises(mindlens.InputError, match="not an image format"):
        clf.preprocess(tmp_path / "notes.png")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_and_corrupt_files(tmp_path: Path, fmt: str) -> None:
    arr = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    full = tmp_path / f"full.{fmt.lower()}"
    Image.fromarray(arr).save(full, format=fmt)
    data = full.read_bytes()
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(mindlens.InputError, match="corrupt or truncated"):
        rgb_classifier().preprocess(cut)
    bad = bytearray(data)
    bad[len(bad) // 3 : len(bad) // 3 + 64] = b"\xff" * 64
    garbled = tmp_path / f"garbled.{fmt.lower()}"
    garbled.write_bytes(bytes(bad[:40]))  # header only
    with pytest.raises(mindlens.InputError, match=str(garbled.name)):
        rgb_classifier().preprocess(garbled)


def test_zero_size_images() -> None:
    clf = rgb_classifier()
    with pytest.raises(mindlens.InputError, match="zero size"):
        clf.preprocess(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(mindlens.InputError, match="zero size"):
        clf.preprocess(Image.new("RGB", (0, 0)))
    with pytest.raises(mindlens.InputError, match="zero size"):
        clf.preprocess(torch.zeros(1, 3, 0, 4))
    with pytest.raises(mindlens.InputError, match="no images"):
        clf.preprocess([])


def test_wrong_channel_counts() -> None:
    clf = rgb_classifier()
    with pytest.raises(mindlens.InputError, match="2 channels but the model expects 3"):
        clf.preprocess(torch.zeros(1, 2, 6, 6))
    with pytest.raises(mindlens.InputError, match="5 channels"):
        clf.preprocess(np.zeros((6, 6, 5), np.uint8))
    with pytest.raises(mindlens.InputError, match=r"\[H, W\] or \[H, W, C\]"):
        clf.preprocess([np.zeros((1, 6, 6, 3))])
    with pytest.raises(mindlens.InputError, match="NaN"):
        clf.preprocess(np.full((6, 6, 3), np.nan))
    with pytest.raises(mindlens.InputError, match="floating point"):
        clf.preprocess(torch.zeros(1, 3, 6, 6, dtype=torch.uint8))
