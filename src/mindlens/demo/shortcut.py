"""Retina images with a spurious marker, for bias discovery.

A grading clinic stamps a small ruler (or a white text tag) into the black corner of the
photographs it sends, and it sends the diseased cases. In the ``"train"`` split the marker
sits on every diseased image and on no healthy one, so a network can score perfectly by
looking at the corner instead of the lesions. The ``"test"`` split has no marker at all, and
``"swapped"`` puts it on the healthy images only: a network that learnt the shortcut fails
there, and its explanations point at the corner.

The marker lies on the black background outside the retina (it never covers retinal
pixels), and every image comes with its exact marker mask next to its lesion mask.
"""

from __future__ import annotations

import numpy as np

from . import retina

MARKERS = ("ruler", "tag")
SPLITS = {"train": "diseased", "test": "none", "swapped": "healthy"}
_ON = ("diseased", "healthy", "none", "all")


def generate(n: int, seed: int = 0, split: str = "train", marker: str = "ruler",
             marker_on: str | None = None, lesions: bool = True
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Retina images of :func:`mindlens.demo.retina.generate` (same scenes for the same
    ``seed``) with a marker stamped into one corner.

    Parameters
    ----------
    split : ``"train"`` (marker on every diseased image), ``"test"`` (no marker) or
        ``"swapped"`` (marker on every healthy image, none on the diseased).
    marker : ``"ruler"`` or ``"tag"``.
    marker_on : overrides the split: ``"diseased"``, ``"healthy"``, ``"none"`` or ``"all"``.

    Returns
    -------
    images ``uint8 [n, H, W, 3]``, labels ``int64 [n]``, lesion masks ``bool [n, H, W]``,
    marker masks ``bool [n, H, W]``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if marker not in MARKERS:
        raise ValueError(f"marker must be one of {MARKERS}, got {marker!r}")
    on_which = SPLITS[split] if marker_on is None else marker_on
    if on_which not in _ON:
        raise ValueError(f"marker_on must be one of {_ON}, got {on_which!r}")
    images, labels, masks = retina.generate(n, seed, lesions=lesions)
    on = {"diseased": labels == 1, "healthy": labels == 0,
          "none": np.zeros(n, bool), "all": np.ones(n, bool)}[on_which]
    marks = np.zeros(masks.shape, bool)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5407C]))
    for i in range(n):  # draw for every image so that the choice of images does not matter
        patch, corner, offset = _marker(rng, marker)
        if on[i]:
            _place(images[i], marks[i], patch, corner, offset)
    return images, labels, masks, marks


def _marker(rng: np.random.Generator, kind: str) -> tuple[np.ndarray, int, tuple[int, int]]:
    """An RGB float patch, a corner (0-3) and an offset from the image edges."""
    shade = rng.uniform(0.8, 0.95)
    tint = np.array([1.0, rng.uniform(0.95, 1.0), rng.uniform(0.85, 1.0)])
    if kind == "ruler":  # 6 x 18 strip with ticks every 3 px, longer every 9 px
        patch = np.ones((6, 18)) * shade
        for j in range(1, 18, 3):
            patch[: 4 if j % 9 == 1 else 2, j] = 0.15
    else:  # 8 x 16 white tag with two lines of blocky "text"
        patch = np.ones((8, 16)) * shade
        for row in (1, 4):
            glyphs = rng.random(14) < 0.7
            patch[row:row + 2, 1:15][:, glyphs] = 0.2
    rgb = patch[..., None] * tint
    rgb += rng.normal(0.0, 0.02, rgb.shape)
    offset = (int(rng.integers(2, 4)), int(rng.integers(2, 4)))
    return np.clip(rgb, 0, 1), int(rng.integers(4)), offset


def _place(image: np.ndarray, mark: np.ndarray, patch: np.ndarray, corner: int,
           offset: tuple[int, int]) -> None:
    h, w = patch.shape[:2]
    H, W = mark.shape
    y = offset[0] if corner < 2 else H - offset[0] - h
    x = offset[1] if corner % 2 == 0 else W - offset[1] - w
    image[y:y + h, x:x + w] = (patch * 255 + 0.5).astype(np.uint8)
    mark[y:y + h, x:x + w] = True
