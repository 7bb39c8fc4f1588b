"""Display normalisation and colour maps.

- Signed maps (LRP, CAM without ReLU, summed gradients): divided by ``max |A|`` per map to
  ``[-1, 1]``, shown with a diverging map centred on zero (red = for the class, blue =
  against it).
- Non-negative maps (Grad-CAM, saliency magnitudes): min-max scaled to ``[0, 1]``, shown
  with a perceptually uniform sequential map.
- A constant map cannot be scaled: it is shown as zeros and flagged ``degenerate``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import matplotlib
import numpy as np
import torch

SIGNED_CMAP = "RdBu_r"
UNSIGNED_CMAP = "inferno"


@dataclass
class DisplayMap:
    """A map scaled for display: ``values`` in [0, 1] (unsigned) or [-1, 1] (signed)."""

    values: np.ndarray
    signed: bool
    degenerate: bool
    scale: float


def to_display(map_: torch.Tensor | np.ndarray, signed: bool, clip_percentile: float | None = None
               ) -> DisplayMap:
    """Scale one ``[H, W]`` map for display (see the module docstring)."""
    a = map_.detach().float().cpu().numpy() if isinstance(map_, torch.Tensor) else np.asarray(
        map_, dtype=np.float32)
    if signed:
        top = float(np.percentile(np.abs(a), clip_percentile)) if clip_percentile else float(
            np.abs(a).max(initial=0.0))
        if top <= 0 or not np.isfinite(top):
            return DisplayMap(np.zeros_like(a), True, True, 0.0)
        return DisplayMap(np.clip(a / top, -1, 1), True, False, top)
    if a.size == 0:
        return DisplayMap(a, False, True, 0.0)
    lo = float(a.min())
    hi = float(np.percentile(a, clip_percentile)) if clip_percentile else float(a.max())
    if hi - lo <= 0 or not np.isfinite(hi - lo):
        return DisplayMap(np.zeros_like(a), False, True, 0.0)
    return DisplayMap(np.clip((a - lo) / (hi - lo), 0, 1), False, False, hi - lo)


def colorize(disp: DisplayMap, cmap: str | None = None) -> np.ndarray:
    """``uint8 [H, W, 3]`` colours for a display map (matplotlib's colours, looked up in a
    table made once per colour map: the same bytes, without matplotlib's float RGBA)."""
    name = cmap or (SIGNED_CMAP if disp.signed else UNSIGNED_CMAP)
    t = (disp.values + 1) / 2 if disp.signed else disp.values
    lut, n = _lut(name)
    # matplotlib's indexing (Colormap._get_rgba_and_mask): x * N, 1.0 in the top bin,
    # below 0 / from N up / NaN to the under / over / bad colours
    xa = np.array(t, copy=True)
    if xa.dtype.kind == "f":
        xa *= n
        xa[xa == n] = n - 1
    under, over, bad = xa < 0, xa >= n, np.isnan(xa)
    with np.errstate(invalid="ignore"):
        idx = xa.astype(int)
    idx[under], idx[over], idx[bad] = n, n + 1, n + 2
    return lut.take(idx, axis=0, mode="clip")


@functools.cache
def _lut(name: str) -> tuple[np.ndarray, int]:
    """``uint8 [N + 3, 3]``: the N colours of a colour map, then under, over and bad."""
    cm = matplotlib.colormaps[name]
    rgba = np.concatenate([cm(np.arange(cm.N)), cm(np.array([-1.0, 2.0, np.nan]))])
    lut = (rgba[:, :3] * 255).round().astype(np.uint8)
    lut.flags.writeable = False
    return lut, cm.N


def gray_saliency(map_: torch.Tensor | np.ndarray) -> np.ndarray:
    """The classic 0-255 gray saliency image (Simonyan et al.): ``|map|`` min-max scaled."""
    a = map_.detach().abs() if isinstance(map_, torch.Tensor) else np.abs(map_)
    disp = to_display(a, signed=False)
    return (disp.values * 255).round().astype(np.uint8)


def css_gradient(signed: bool, steps: int = 9) -> str:
    """A CSS linear-gradient of the colour map, for legends in the report."""
    name = SIGNED_CMAP if signed else UNSIGNED_CMAP
    cmap = matplotlib.colormaps[name]
    stops = []
    for i in range(steps):
        r, g, b, _ = cmap(i / (steps - 1))
        pos = 100 * i / (steps - 1)
        stops.append(f"rgb({int(r * 255)},{int(g * 255)},{int(b * 255)}) {pos:.0f}%")
    return f"linear-gradient(to right, {', '.join(stops)})"


def to_display_shared(maps: list[torch.Tensor | np.ndarray], signed: bool,
                      clip_percentile: float | None = None) -> list[DisplayMap]:
    """Scale several comparable maps (one method, one image, several classes) on one
    scale, so that equal colours mean equal values across them."""
    arrays = [m.detach().float().cpu().numpy() if isinstance(m, torch.Tensor)
              else np.asarray(m, dtype=np.float32) for m in maps]
    if len(arrays) < 2:
        return [to_display(a, signed, clip_percentile) for a in arrays]
    if signed:
        top = max((float(np.percentile(np.abs(a), clip_percentile)) if clip_percentile
                   else float(np.abs(a).max(initial=0.0))) for a in arrays)
        if top <= 0 or not np.isfinite(top):
            return [DisplayMap(np.zeros_like(a), True, True, 0.0) for a in arrays]
        return [DisplayMap(np.clip(a / top, -1, 1), True, bool(np.abs(a).max() == 0), top)
                for a in arrays]
    lo = min(float(a.min()) for a in arrays)
    hi = max((float(np.percentile(a, clip_percentile)) if clip_percentile else float(a.max()))
             for a in arrays)
    if hi - lo <= 0 or not np.isfinite(hi - lo):
        return [DisplayMap(np.zeros_like(a), False, True, 0.0) for a in arrays]
    return [DisplayMap(np.clip((a - lo) / (hi - lo), 0, 1), False, bool(np.ptp(a) == 0),
                       hi - lo) for a in arrays]
