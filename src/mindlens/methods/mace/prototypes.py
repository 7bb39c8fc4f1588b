"""Prototypes (spec §8.5 step 5): for every concept, the training images where its
relevance contribution ``rho_{c,q}`` is largest, kept as small crops around the peak of
the concept's map so that a person can name the concept."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...model import Classifier
from .data import FeatureCache, ImageSet
from .store import Prototypes
from .unit import MaceUnit


@torch.no_grad()
def concept_scores(unit: MaceUnit, cache: FeatureCache, chunk: int = 256
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``rho [N, K, P]`` and the peak position (flat index into ``H*W``) of every map."""
    rhos, peaks = [], []
    for start in range(0, cache.F.shape[0], chunk):
        out = unit(cache.F[start:start + chunk].to(unit.keep.dtype))
        rhos.append(out.rho)
        peaks.append(out.maps.flatten(3).argmax(dim=3))
    return torch.cat(rhos), torch.cat(peaks)


@torch.no_grad()
def build_prototypes(clf: Classifier, unit: MaceUnit, cache: FeatureCache, images: ImageSet,
                     n: int = 5, size: int = 32, crop_fraction: float = 0.5) -> Prototypes:
    """Crops ``uint8 [K, P, n, size, size, 3]``: a square of ``crop_fraction`` of the image
    side, centred on the concept map's peak (clipped to the image), resized to ``size``."""
    rho, peaks = concept_scores(unit, cache)
    n = min(n, rho.shape[0])
    top = rho.topk(n, dim=0)  # values/indices [n, K, P]
    index = top.indices.permute(1, 2, 0).contiguous()  # [K, P, n]
    k, p = index.shape[:2]
    h, w = cache.F.shape[2:]
    H, W = clf.input_size
    side_h, side_w = max(2, round(H * crop_fraction)), max(2, round(W * crop_fraction))
    crops = torch.zeros(k, p, n, size, size, 3, dtype=torch.uint8)
    needed = sorted(set(index.flatten().tolist()))
    pixels: dict[int, torch.Tensor] = {}
    for start in range(0, len(needed), 64):
        ids = needed[start:start + 64]
        disp = torch.from_numpy(clf.display_pixels(images.batch(ids)))
        pixels.update(zip(ids, disp, strict=True))
    for c in range(k):
        for q in range(p):
            for j in range(n):
                i = int(index[c, q, j])
                peak = int(peaks[i, c, q])
                cy = (peak // w + 0.5) * H / h
                cx = (peak % w + 0.5) * W / w
                y0 = int(min(max(round(cy - side_h / 2), 0), H - side_h))
                x0 = int(min(max(round(cx - side_w / 2), 0), W - side_w))
                region = pixels[i][y0:y0 + side_h, x0:x0 + side_w].permute(2, 0, 1)[None]
                small = F.interpolate(region.float(), size=(size, size), mode="bilinear",
                                      align_corners=False, antialias=True)
                crops[c, q, j] = small[0].permute(1, 2, 0).round().clamp(0, 255).byte()
    return Prototypes(crops, index, top.values.permute(1, 2, 0).contiguous())
