"""The audit as one self-contained HTML page (inline images and SVG, the report's look)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import matplotlib
import numpy as np
from PIL import Image

from ..render.colors import colorize, to_display
from ..render.overlay import overlay, png_data_uri
from ..runs import write_atomic

THUMB = 96


def _colour(i: int) -> str:
    r, g, b, _ = matplotlib.colormaps["tab10"](i % 10)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def _map_uri(m: np.ndarray) -> str:
    return png_data_uri(colorize(to_display(m, signed=False)), 160)


def _thumb(path: str, m: np.ndarray) -> str:
    disp = to_display(np.asarray(Image.fromarray(m.astype(np.float32)).resize(
        (THUMB, THUMB), Image.BILINEAR)), signed=False)
    try:
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("RGB").resize((THUMB, THUMB), Image.BILINEAR))
        return png_data_uri(overlay(pixels, disp), None)
    except OSError:  # the image moved: the map alone
        return png_data_uri(colorize(disp), None)


def _spectrum(eig: list[float], k: int, w: int = 300, h: int = 150) -> str:
    n = len(eig)
    top = max(max(eig, default=1.0), 1e-9)
    bw = (w - 20) / max(n, 1)
    bars = []
    for i, v in enumerate(eig):
        bh = (h - 30) * v / top
        fill = "#d9822b" if i == k - 1 else "#1f5fa8"
        bars.append(f'<rect x="{10 + i * bw:.1f}" y="{h - 20 - bh:.1f}" width="{bw * 0.8:.1f}" '
                    f'height="{bh:.1f}" fill="{fill}"/>')
    return (f'<svg width="{w}" height="{h}" role="img">{"".join(bars)}'
            f'<text x="10" y="{h - 5}">1</text><text x="{w - 30}" y="{h - 5}">{n}</text></svg>')


def _scatter(xy: list[list[float]], labels: list[int], w: int = 300) -> str:
    if not xy:
        return ""
    a = np.asarray(xy)
    lo, hi = a.min(0), a.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1)
    p = 8 + (a - lo) / span * (w - 16)
    dots = [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{_colour(c)}"/>'
            for (x, y), c in zip(p, labels, strict=True)]
    return f'<svg width="{w}" height="{w}" role="img">{"".join(dots)}</svg>'


def write_html(result: dict[str, Any], path: Path) -> Path:
    """Render ``result`` (see :func:`mindlens.audit`) to ``path``."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("mindlens", "templates"),
                             autoescape=True)
    classes = []
    for name, c in result["classes"].items():
        rows = c["rows"]
        shown = c["embedding_2d"]["positions"]
        clusters = []
        for i, cl in enumerate(c["clusters"]):
            thumbs = [{"id": rows[j]["id"], "src": _thumb(rows[j]["path"], m)}
                      for j, m in zip(cl["typical"], cl["typical_maps"], strict=True)]
            clusters.append({**cl, "colour": _colour(i), "mean_map": _map_uri(cl["mean_map"]),
                             "thumbs": thumbs})
        ratio = c["gap_ratio"]
        who = c.get("who") or f"the images called '{name}'"
        classes.append({**c, "name": name, "clusters": clusters,
                        "heading": who[4].upper() + who[5:],  # "Images called 'x'"
                        "gap_ratio": "∞" if ratio is None else f"{ratio:.1f}",
                        "mean_map": _map_uri(c["mean_map"]),
                        "spectrum": _spectrum(c["eigenvalues"], c["k"]),
                        "scatter": _scatter(c["embedding_2d"]["xy"],
                                            [c["labels"][j] for j in shown])})
    p = result["parameters"]
    html = env.get_template("audit.html").render(
        title="Strategy audit", store=result["store"], method=result["method"],
        images=result["images"], classes=classes, skipped=result["skipped"],
        params=f"{p['affinity']}, {p['normalisation']}, {p['pooling']}")
    write_atomic(path, html)
    return path
