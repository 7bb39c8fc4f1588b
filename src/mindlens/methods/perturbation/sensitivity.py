"""How much an occlusion map depends on the occluding value: :func:`baseline_sensitivity`
runs :class:`~.occlusion.Occlusion` once per baseline and correlates the maps
(:mod:`mindlens.sensitivity` turns the result into a report figure and words)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch

from ...errors import InputError
from ...explanation import Explanation
from ...model import Classifier
from ...targets import Targets
from .occlusion import Occlusion


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of flattened maps ``[B, T, ...]`` -> ``[B, T]`` (NaN when one
    map is constant)."""
    a = a.flatten(2).double()
    b = b.flatten(2).double()
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    denom = a.norm(dim=-1) * b.norm(dim=-1)
    return (a * b).sum(-1) / denom.masked_fill(denom == 0, math.nan)


def _ranks(a: torch.Tensor) -> torch.Tensor:
    flat = a.flatten(2)
    return flat.argsort(-1).argsort(-1).to(torch.float64)


def baseline_sensitivity(clf: Classifier, x: Any, baselines: Sequence[Any],
                         target: Any = None, top_k: int = 1, **params: Any
                         ) -> dict[str, Any]:
    """How much the occlusion map changes with the occluding value.

    Runs :class:`Occlusion` once per baseline (same window, stride, score, targets) and
    compares every pair of maps per image and target with the Pearson correlation of the
    pixel values and the Spearman rank correlation. Returns::

        {"baselines": [names], "explanations": {name: Explanation},
         "pairs": [{"a": name, "b": name, "pearson": [[per image, per target]],
                    "spearman": [[...]], "mean_pearson": float, "mean_spearman": float}],
         "min_pearson": float}

    A low ``min_pearson`` means the map depends on the arbitrary choice of the occluding
    value (Zeiler & Fergus' grey square looks like atrophy on an MRI, for instance) and
    should be read with care.
    """
    if len(baselines) < 2:
        raise InputError("baseline sensitivity needs at least two baselines, e.g. zero,mean,blur")
    if not isinstance(x, torch.Tensor) or x.dim() == 4:
        x = clf.preprocess(x)
    names = [b if isinstance(b, str) else repr(b) if isinstance(b, (int, float))
             else f"baseline {i}" for i, b in enumerate(baselines)]
    classes = None
    explanations: dict[str, Explanation] = {}
    for name, base in zip(names, baselines, strict=True):
        t = Targets(target, top_k) if classes is None else Targets(classes)
        e = Occlusion(baseline=base, **params).explain(clf, x, t)
        classes = e.targets if target is None or not callable(target) else None
        explanations[name] = e
    pairs = []
    for a, b in itertools.combinations(names, 2):
        ma, mb = explanations[a].maps, explanations[b].maps
        pear = _pearson(ma, mb)
        spear = _pearson(_ranks(ma), _ranks(mb))
        pairs.append({"a": a, "b": b, "pearson": pear.tolist(), "spearman": spear.tolist(),
                      "mean_pearson": float(pear.nanmean()),
                      "mean_spearman": float(spear.nanmean())})
    return {"baselines": names, "explanations": explanations, "pairs": pairs,
            "min_pearson": min(p["mean_pearson"] for p in pairs)}
