"""The audit as one self-contained HTML page (inline images and SVG, the report's look)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from ..render.overlay import png_data_uri
from ..runs import write_atomic
from .pictures import cluster_colour, image_picture, map_pixels

THUMB = 96


def _map_uri(m: np.ndarray) -> str:
    return png_data_uri(map_pixels(m), 160)


def _thumb(row: dict[str, Any], m: np.ndarray) -> str:
    return png_data_uri(image_picture(row["path"], m, THUMB, row.get("mask")).pixels, None)


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
    dots = [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{cluster_colour(c)}"/>'
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
            thumbs = [{"id": rows[j]["id"], "src": _thumb(rows[j], m)}
                      for j, m in zip(cl["typical"], cl["typical_maps"], strict=True)]
            clusters.append({**cl, "colour": cluster_colour(i),
                             "mean_map": _map_uri(cl["mean_map"]), "thumbs": thumbs})
        ratio = c["gap_ratio"]
        verb = "called" if c.get("called", True) else "explained for"
        classes.append({**c, "name": name, "clusters": clusters,
                        "heading": f"Images {verb} “{name}”",
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
