"""The demo world: synthetic retina screening data with exact lesion masks, and the bundled
demo models trained on it.

- :mod:`mindlens.demo.retina`: ``generate(n, seed)`` -> images, labels, lesion masks.
- :mod:`mindlens.demo.shortcut`: the same images with a corner marker that co-occurs with
  the diseased class in training (bias discovery).
- :mod:`mindlens.demo.colour`: the same images with a colour cast on the diseased ones in
  training (colour shortcut), and the benchmark of whether a method can reveal it.
- :func:`load_retina_model`, :func:`load_shortcut_model`: the bundled classifiers.
- :func:`demo_cases`: a handful of test images worth explaining.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..model import Classifier
from ..model_card import load_model
from . import colour, retina, shortcut

ASSETS = Path(__file__).parent / "assets"
MODELS = ("retina", "shortcut", "colour", "colour_control")

__all__ = ["ASSETS", "MODELS", "colour", "demo_cases", "demo_unit_path", "load_demo_model",
           "load_retina_model", "load_shortcut_model", "retina", "shortcut"]


def card_path(name: str) -> Path:
    if name not in MODELS:
        raise ValueError(f"demo model must be one of {MODELS}, got {name!r}")
    return ASSETS / f"{name}.json"


def load_demo_model(name: str) -> Classifier:
    """A bundled demo model (``"retina"``, ``"shortcut"``, ``"colour"`` or
    ``"colour_control"``) through its model card."""
    return load_model(card_path(name))


def demo_unit_path(name: str) -> Path | None:
    """The bundled MACE concept unit of a demo model (``assets/<name>_mace.safetensors``,
    written by ``python -m mindlens.methods.mace.demo_unit``), or None if none is bundled."""
    path = card_path(name).with_name(f"{name}_mace.safetensors")
    return path if path.exists() else None


def load_retina_model() -> Classifier:
    """The bundled screening CNN trained on :mod:`mindlens.demo.retina` images."""
    return load_demo_model("retina")


def load_shortcut_model() -> Classifier:
    """The bundled CNN trained with the corner marker on every diseased image."""
    return load_demo_model("shortcut")


@torch.no_grad()
def _probs(clf: Classifier, images: np.ndarray) -> np.ndarray:
    return clf.predict(clf.preprocess(list(images)))[:, 1].numpy()


def demo_cases(seed: int = 2026, n: int = 64) -> list[dict[str, Any]]:
    """Four test images worth explaining, from ``n`` fresh images of ``seed``.

    A diseased and a healthy image the retina model gets right with confidence, the retina
    model's worst (misclassified, else most borderline) image, and a healthy image with the
    marker that the shortcut model calls diseased (or scores highest). Each case is a dict:
    ``image`` (uint8 [H, W, 3]), ``label`` (1 = diseased), ``mask`` (lesion mask, bool [H, W]),
    ``marker_mask`` (bool [H, W], empty except for the shortcut case), ``title``, ``model``
    (``"retina"`` or ``"shortcut"``, see :func:`load_demo_model`) and ``p_diseased`` (that
    model's probability for class diseased).
    """
    images, labels, masks = retina.generate(n, seed)
    p = _probs(load_retina_model(), images)
    none = np.zeros(masks.shape[1:], bool)

    def case(i: int, title: str, model: str, prob: float, marker: np.ndarray = none,
             imgs: np.ndarray = images) -> dict[str, Any]:
        return dict(image=imgs[i], label=int(labels[i]), mask=masks[i], marker_mask=marker,
                    title=title, model=model, p_diseased=float(prob))

    ill, ok = labels == 1, (p > 0.5) == (labels == 1)
    sick = int(np.argmax(np.where(ill & ok, p, -1)))
    well = int(np.argmin(np.where(~ill & ok, p, 2)))
    margin = np.where(ill, p, 1 - p)  # probability of the true class
    worst = int(np.argmin(margin))
    kind = "misclassified" if margin[worst] < 0.5 else "borderline"
    cases = [
        case(sick, f"Diseased: {_count(masks[sick])} lesion region(s)", "retina", p[sick]),
        case(well, "Healthy", "retina", p[well]),
        case(worst, f"{kind.capitalize()}: truly {retina.LABELS[labels[worst]]}", "retina",
             p[worst]),
    ]
    s_images, _, _, marks = shortcut.generate(n, seed, split="swapped")
    s_p = _probs(load_shortcut_model(), s_images)
    j = int(np.argmax(np.where(labels == 0, s_p, -1)))
    cases.append(case(j, "Shortcut: healthy, with the corner marker", "shortcut", s_p[j],
                      marks[j], s_images))
    return cases


def _count(mask: np.ndarray) -> int:
    """Connected lesion regions (4-neighbourhood) in a mask."""
    from skimage.measure import label

    return int(label(mask, connectivity=1).max())
