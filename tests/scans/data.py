"""Small scan inputs: demo retina images with the shortcut marker on a known subset of the
diseased ones, written as PNG files in class folders, with the lesion masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mindlens.demo import ASSETS, shortcut

SHORTCUT_CARD = ASSETS / "shortcut.json"
RETINA_CARD = ASSETS / "retina.json"


def write_images(root: Path, n: int, seed: int = 11, diseased_only: bool = False
                 ) -> dict[str, bool]:
    """Write ``root/images/<label>/<i>.png`` and ``root/masks/<i>.png`` (lesion masks of the
    diseased images); the marker sits on every diseased image whose marker the generator
    put in the upper-left corner, on no other. Returns ``{id: marker flag}``."""
    on, labels, lesions, marks = shortcut.generate(n, seed=seed, marker_on="diseased")
    off = shortcut.generate(n, seed=seed, marker_on="none")[0]
    h, w = marks.shape[1:]
    flag = (labels == 1) & marks[:, : h // 4, : w // 4].any((1, 2))
    flags = {}
    for i in range(n):
        if diseased_only and labels[i] != 1:
            continue
        name = "diseased" if labels[i] == 1 else "healthy"
        folder = root / "images" / name
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(on[i] if flag[i] else off[i]).save(folder / f"{i:03d}.png")
        if labels[i] == 1:
            (root / "masks").mkdir(exist_ok=True)
            Image.fromarray((lesions[i] * 255).astype(np.uint8)).save(root / "masks" /
                                                                      f"{i:03d}.png")
        flags[f"{name}/{i:03d}.png"] = bool(flag[i])
    return flags
