"""Where a map's evidence lies, measured against an expert's marks, in one sentence.

The verdict a non-expert reads first is built from three measured numbers on one map
(the "trusted" method's, see :mod:`mindlens.cases`):

- the **evidence region**: the most relevant ``fraction`` of the image (the pixels with
  the largest positive values; the outline drawn on the picture is this region's edge);
- **regions hit**: how many connected marked regions (lesions, objects) the evidence
  region touches, with a tolerance of ``tolerance`` pixels (the pointing game's tolerance,
  Zhang et al. 2018, "Top-down neural attention by excitation backprop", IJCV);
- **share outside**: the part of the relevance inside the evidence region that lies
  outside the marks dilated by ``tolerance`` (the relevance mass accuracy of Arras et al.
  2022, "CLEVR-XAI", Information Fusion, restricted to the outlined region, so that the
  number describes what the picture shows);

and, where a known marker (a ruler, a watermark, a corner tag) is given, the share of the
evidence region's relevance on it. Banners flag a wrong decision, evidence away from the marks and
evidence on a marker.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

#: the most relevant part of the image that the outline shows and the sentence counts
DEFAULT_FRACTION = 0.05
#: pixels of slack around the marks (the demo's pointing game uses 4 px at 128 px)
DEFAULT_TOLERANCE = 4.0
#: a banner says "away from the marks" above this share of evidence outside them
AWAY_SHARE = 0.5
#: a banner says "rests on the marker" at or above this share of evidence on the marker
MARKER_SHARE = 0.25


@dataclass
class Words:
    """How the sentence names things: ``region``/``regions`` (what the expert marked,
    singular and plural), ``marker`` (a known spurious cue) and ``subject`` (what the
    model should look at instead)."""

    region: str = "marked region"
    regions: str = "marked regions"
    marker: str = "the known marker"
    subject: str = "the object"


@dataclass
class Banner:
    """A warning shown above the picture: ``kind`` is ``"wrong"``, ``"away"`` or
    ``"marker"``."""

    kind: str
    text: str


@dataclass
class Verdict:
    """The measured numbers and their sentence; ``status`` is a short label for the
    summary table."""

    sentence: str
    status: str
    fraction: float
    regions_total: int | None = None
    regions_hit: int | None = None
    share_outside: float | None = None
    share_on_marker: float | None = None
    #: the part of the image the marks (dilated by the tolerance) cover, for scale
    marks_area: float | None = None
    marker_area: float | None = None
    banners: list[Banner] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evidence_threshold(map_: np.ndarray, fraction: float = DEFAULT_FRACTION) -> float | None:
    """The value above which lie the most relevant ``fraction`` of the pixels (positive
    values only; None for a map with no positive value)."""
    a = np.asarray(map_, dtype=np.float64)
    pos = np.where(np.isfinite(a) & (a > 0), a, 0.0)
    n = int(np.count_nonzero(pos))
    if n == 0:
        return None
    k = max(1, min(n, round(fraction * a.size)))
    return max(float(np.partition(pos.ravel(), a.size - k)[a.size - k]),
               float(np.finfo(float).tiny))


def evidence_region(map_: np.ndarray, fraction: float = DEFAULT_FRACTION) -> np.ndarray:
    """Bool mask of the most relevant ``fraction`` of the pixels (empty for a map with no
    positive value)."""
    a = np.asarray(map_, dtype=np.float64)
    t = evidence_threshold(a, fraction)
    return np.zeros(a.shape, bool) if t is None else np.nan_to_num(a) >= t


def _dilate(mask: np.ndarray, tolerance: float) -> np.ndarray:
    if tolerance <= 0 or not mask.any():
        return mask
    return ndimage.distance_transform_edt(~mask) <= tolerance


def _share(pos: np.ndarray, where: np.ndarray) -> float | None:
    total = float(pos.sum())
    return None if total <= 0 else float(pos[where].sum()) / total


def _pct(share: float | None) -> str:
    if share is None:
        return "n/a"
    return f"{share:.0%}" if share >= 0.01 or share == 0 else "less than 1%"


def measure(map_: np.ndarray, mask: np.ndarray | None = None,
            marker: np.ndarray | None = None, fraction: float = DEFAULT_FRACTION,
            tolerance: float = DEFAULT_TOLERANCE, words: Words | None = None,
            explained: str = "the decision") -> Verdict:
    """The verdict of one ``[H, W]`` map against an expert ``mask`` and a known ``marker``
    (bool ``[H, W]`` each, or None); ``explained`` names the class the map explains."""
    w = words or Words()
    a = np.asarray(map_, dtype=np.float64)
    region = evidence_region(a, fraction)
    pos = np.where(region, np.nan_to_num(a), 0.0)  # the outlined evidence, by weight
    pct = f"{fraction:.0%}"
    v = Verdict(sentence="", status="", fraction=fraction)
    if not region.any():
        v.sentence = (f"The map holds no evidence for “{explained}”: no pixel speaks for it.")
        v.status = "no evidence"
        return v
    has_mask = mask is not None and bool(np.asarray(mask).any())
    has_marker = marker is not None and bool(np.asarray(marker).any())
    if has_marker:
        near_marker = _dilate(np.asarray(marker, bool), tolerance)
        v.share_on_marker = _share(pos, near_marker)
        v.marker_area = float(near_marker.mean())
    if has_mask:
        m = np.asarray(mask, bool)
        labels, n = ndimage.label(m)
        near = _dilate(region, tolerance)
        hit = len(set(np.unique(labels[near & m]).tolist()) - {0})
        v.regions_total, v.regions_hit = int(n), int(hit)
        near_marks = _dilate(m, tolerance)
        inside = _share(pos, near_marks) or 0.0
        v.share_outside = 1.0 - inside
        v.marks_area = float(near_marks.mean())
        noun = w.region if n == 1 else w.regions
        where = (f"lies on {hit} of the {n} {noun}" if n > 1 else
                 f"lies on the {noun}" if hit else f"does not touch the {noun}")
        v.sentence = (f"Its evidence for “{explained}” (the outlined {pct} of the image the "
                      f"model relied on most) {where}; {v.share_outside:.0%} of it lies "
                      f"outside {'it' if n == 1 else 'them'} (with a margin of "
                      f"{tolerance:g} px, {'it covers' if n == 1 else 'they cover'} "
                      f"{_pct(v.marks_area)} of the image).")
        v.status = (f"on {hit} of {n} {noun}" if v.share_outside <= AWAY_SHARE
                    else f"mostly away from the {w.regions}")
        if v.share_outside > AWAY_SHARE:
            v.banners.append(Banner("away", f"Most of the evidence ({v.share_outside:.0%}) "
                                            f"lies away from the {w.regions}."))
    else:
        v.sentence = (f"No {w.regions} on this image: the outline shows the {pct} of the "
                      f"image the model relied on most for “{explained}”.")
        v.status = "no marks to compare"
    if v.share_on_marker is not None:
        cover = f"{w.marker}, which covers {_pct(v.marker_area)} of the image"
        v.sentence += f" {v.share_on_marker:.0%} of the evidence lies on {cover}."
        if v.share_on_marker >= MARKER_SHARE:
            v.banners.append(Banner("marker", f"The evidence points at {w.marker}, not at "
                                              f"{w.subject}: {v.share_on_marker:.0%} of it "
                                              f"lies on {cover}."))
            v.status = f"points at {w.marker}"
    return v
