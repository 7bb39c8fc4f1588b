"""One PNG per image: the original next to each method's map, with titles underneath."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .colors import to_display
from .overlay import overlay

TILE = 192
CAPTION = 22


def panel(image: np.ndarray, maps: dict[str, tuple[np.ndarray, bool]], tile: int = TILE,
          mask: np.ndarray | None = None) -> np.ndarray:
    """``uint8 [H, W, 3]`` strip: original | method 1 | method 2 ...

    ``image`` is grayscale or RGB; ``maps`` maps a title to ``([h, w] raw map, signed)``;
    each is scaled and overlaid on the image, then enlarged to ``tile`` pixels.
    """
    from .evidence import as_rgb
    from .overlay import mask_outline

    image = as_rgb(image)
    tiles = [("input", image if mask is None else mask_outline(image, mask))]
    for title, (m, signed) in maps.items():
        clip = 99.5 if m.shape == image.shape[:2] else None
        tiles.append((title, overlay(image, to_display(m, signed, clip))))
    canvas = Image.new("RGB", (tile * len(tiles), tile + CAPTION), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for i, (title, pixels) in enumerate(tiles):
        img = Image.fromarray(pixels).resize((tile, tile), Image.BILINEAR)
        canvas.paste(img, (i * tile, 0))
        draw.text((i * tile + 6, tile + 5), title[:30], fill=(30, 30, 30), font=font)
    return np.asarray(canvas)
