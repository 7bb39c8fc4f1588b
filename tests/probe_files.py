"""Real files for the catalogue of bad inputs: PNGs written chunk by chunk (so a huge image
costs no memory to make), decompression bombs, palette/RGBA twins, multi-frame files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

#: PNG colour types: channels per pixel at 8 bits
CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def write_png(path: Path, width: int, height: int, colour: int = 2, depth: int = 8,
              rows: int | None = None) -> Path:
    """A valid PNG of ``width x height`` whose pixels are a flat grey, streamed row by row;
    ``rows``: write only that many rows (a header that claims more than the data holds)."""
    bits = width * CHANNELS[colour] * depth
    row = b"\x00" + bytes([0x55]) * ((bits + 7) // 8)
    comp = zlib.compressobj(1)
    parts = [comp.compress(row) for _ in range(height if rows is None else rows)]
    idat = b"".join(parts) + comp.flush()
    data = (b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
            + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    path.write_bytes(data)
    return path


def bomb_header(path: Path, side: int = 100_000) -> Path:
    """A PNG whose header claims ``side x side`` RGB pixels and that holds one row."""
    return write_png(path, side, side, rows=1)


def palette_twins(folder: Path) -> tuple[Path, Path]:
    """The same half-transparent picture as a palette PNG (tRNS) and as an RGBA PNG."""
    rng = np.random.default_rng(3)
    palette = rng.integers(0, 256, (4, 3), dtype=np.uint8)
    index = rng.integers(0, 4, (20, 24), dtype=np.uint8)
    alpha = np.array([0, 80, 200, 255], dtype=np.uint8)
    pal = Image.fromarray(index, mode="P")
    pal.putpalette(palette.flatten().tolist())
    pal.info["transparency"] = bytes(alpha)
    p_path = folder / "palette.png"
    pal.save(p_path, transparency=bytes(alpha))
    rgba = np.concatenate([palette[index], alpha[index][..., None]], axis=2)
    r_path = folder / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(r_path)
    return p_path, r_path


def la_twins(folder: Path) -> tuple[Path, Path]:
    """The same grey picture with alpha as LA and as RGBA."""
    rng = np.random.default_rng(4)
    grey = rng.integers(0, 256, (20, 24), dtype=np.uint8)
    alpha = rng.integers(0, 256, (20, 24), dtype=np.uint8)
    la_path, rgba_path = folder / "la.png", folder / "la_rgba.png"
    Image.fromarray(np.stack([grey, alpha], axis=2), mode="LA").save(la_path)
    Image.fromarray(np.stack([grey, grey, grey, alpha], axis=2), mode="RGBA").save(rgba_path)
    return la_path, rgba_path


def animated_gif(path: Path, frames: int = 3) -> Path:
    imgs = [Image.fromarray(np.full((20, 24, 3), 60 * i, dtype=np.uint8)) for i in range(frames)]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=100, loop=0)
    return path


def multipage_tiff(path: Path, pages: int = 2) -> Path:
    imgs = [Image.fromarray(np.full((20, 24, 3), 90 * i, dtype=np.uint8)) for i in range(pages)]
    imgs[0].save(path, save_all=True, append_images=imgs[1:])
    return path


def big_jpeg(path: Path, side: int = 6000) -> Path:
    """A real ``side x side`` JPEG (36 MP at the default), flat with a gradient."""
    ramp = np.linspace(0, 255, side, dtype=np.float32).astype(np.uint8)
    img = Image.fromarray(np.broadcast_to(ramp, (side, side)).copy(), mode="L").convert("RGB")
    img.save(path, quality=70)
    return path
