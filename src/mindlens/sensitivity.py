"""Baseline sensitivity in words and pictures: how much an occlusion map changes with the
occluding value (zero, the image mean, a blurred copy, a grey level).

Zeiler & Fergus (2014) occlude with a grey square; the choice is arbitrary, and a model
may react to the fill itself (to a brain-MRI model a grey or black patch can look like
atrophy or a lesion). :func:`mindlens.methods.perturbation.sensitivity.baseline_sensitivity` runs
occlusion once per baseline and correlates the maps; this module turns its result into a
report figure, a plain-language caption and JSON numbers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import InputError
from .model import Classifier
from .render.montage import montage, stack
from .render.panel import panel

NAMED = ("zero", "mean", "blur")


def parse_baselines(spec: str) -> list[str | float]:
    """``"zero,mean,blur,0.5"`` -> ``["zero", "mean", "blur", 0.5]`` (a number is a pixel
    value in [0, 1]); at least two, no repeats."""
    out: list[str | float] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part in NAMED:
            out.append(part)
            continue
        try:
            out.append(float(part))
        except ValueError:
            raise InputError(
                f"unknown baseline {part!r} in --baselines; use zero, mean, blur or a pixel "
                f"value in [0, 1] such as 0.5 (grey), e.g. --baselines zero,mean,blur"
            ) from None
    if len(out) < 2 or len(set(map(str, out))) != len(out):
        raise InputError(
            f"--baselines needs at least two different baselines, e.g. zero,mean,blur; "
            f"got {spec!r}"
        )
    return out


def _num(v: float) -> float | None:
    return None if v is None or math.isnan(v) else round(float(v), 6)


def summary(result: dict[str, Any], b: int = 0) -> dict[str, Any]:
    """The numbers for image ``b``: per pair of baselines, Pearson and Spearman
    correlation per explained target (``None`` where a map is constant)."""
    pairs = [{"a": p["a"], "b": p["b"],
              "pearson": [_num(v) for v in p["pearson"][b]],
              "spearman": [_num(v) for v in p["spearman"][b]]} for p in result["pairs"]]
    first = result["explanations"][result["baselines"][0]]
    pear = [v for p in pairs for v in p["pearson"][:1] if v is not None]
    return {"baselines": result["baselines"], "targets": first.targets[b].tolist(),
            "pairs": pairs, "min_pearson": min(pear) if pear else None}


def verdict(min_pearson: float | None) -> str:
    if min_pearson is None:
        return "At least one map is flat, so the maps cannot be compared."
    if min_pearson >= 0.9:
        return "The map barely changes with the occluding value."
    if min_pearson >= 0.7:
        return "The map changes somewhat with the occluding value."
    return "The map changes a lot with the occluding value."


def caption(result: dict[str, Any], clf: Classifier, b: int = 0) -> str:
    """Plain words: how much the map changes (the correlations) and why that matters."""
    s = summary(result, b)
    first = result["explanations"][result["baselines"][0]]
    label = clf.label(int(first.targets[b, 0])) if int(first.targets[b, 0]) >= 0 else "score"
    unit = "voxels" if first.maps.dim() == 5 else "pixels"
    numbers = "; ".join(
        f"{p['a']} vs {p['b']}: Pearson {_fmt(p['pearson'][0])}, Spearman "
        f"{_fmt(p['spearman'][0])}" for p in s["pairs"])
    return (
        f"{verdict(s['min_pearson'])} Occlusion hides one part of the input at a time behind "
        f"a fill value and measures how much the score for “{label}” drops. Which fill to use "
        f"is an arbitrary choice: here the maps for the fill values "
        f"{', '.join(map(str, s['baselines']))} are compared ({numbers}); zero is 0 after the "
        f"model's normalisation (its training mean), mean the input's own mean, blur a "
        f"blurred copy, a number a fixed grey level. A correlation of 1 means the same map up "
        f"to brightness, 0 means unrelated maps; Spearman compares only the ranking of the "
        f"{unit}. Each map is coloured on its own scale. Why it matters: the model may "
        f"react to the fill itself (to a model trained on brain scans, a grey or black "
        f"patch can look like atrophy or a lesion), and then the map shows the effect of "
        f"the patch rather than what the hidden part contributed. Trust the parts on which "
        f"all fill values agree; where they disagree, read the occlusion map with care."
    )


def _fmt(v: float | None) -> str:
    return "n/a (flat map)" if v is None else f"{v:.2f}"


def figure(result: dict[str, Any], clf: Classifier, x: Any, b: int = 0) -> np.ndarray:
    """The occlusion map of the first explained target for each baseline, side by side
    (2-D), or one slice montage per baseline, stacked (volumes)."""
    pixels = clf.display_pixels(x[b : b + 1])[0]
    maps = {f"fill: {name}": (e.maps[b, 0].detach().cpu().numpy(), e.signed)
            for name, e in result["explanations"].items()}
    if pixels.ndim == 4:
        return stack([("input", montage(pixels, n_slices=8, columns=8, tile=96))] + [
            (title, montage(pixels, m, signed, n_slices=8, columns=8, tile=96))
            for title, (m, signed) in maps.items()])
    return panel(pixels, maps)
