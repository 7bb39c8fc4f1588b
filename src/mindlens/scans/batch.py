"""The work on one batch, shared by every engine: decode, predict, explain with each
method, bring the maps to the analysis resolution, and make the index rows.

An engine only decides where :func:`explain_batch` runs (this process, a Ray actor) and
hands its :class:`BatchResult` to the store; the numbers never depend on the engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import methods
from ..errors import InputError
from ..evaluate import load_mask
from ..model import Classifier
from ..targets import Targets
from .items import Item


@dataclass(frozen=True)
class Settings:
    """What a scan computes: methods and their parameters, which class each map explains
    (``"predicted"``, ``"label"`` or a class index), the analysis resolution, the number
    of top classes in the index, the batch size (a batch is one chunk of the store) and
    whether the maps are also kept at the model's input resolution (``native``)."""

    methods: tuple[str, ...]
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    target: str | int = "predicted"
    size: int = 64
    top_k: int = 3
    batch_size: int = 16
    native: bool = False

    def describe(self) -> dict[str, Any]:
        from ..runs import describe

        return {"methods": {m: describe(dict(self.params.get(m, {}))) for m in self.methods},
                "target": self.target, "size": self.size, "top_k": self.top_k,
                "batch_size": self.batch_size, "native": self.native}


@dataclass
class BatchResult:
    """Maps ``{method: float16 [b, size, size]}``, one index row per image, and with
    ``Settings.native`` the maps at the input resolution ``{method: float16 [b, H, W]}``."""

    start: int
    maps: dict[str, np.ndarray]
    rows: list[dict[str, Any]]
    native: dict[str, np.ndarray] = field(default_factory=dict)


def load_pixels(clf: Classifier, item: Item) -> torch.Tensor:
    """One image file -> a model-space tensor ``[1, C, H, W]`` (runs in loader threads)."""
    return clf.pixels_to_tensor(clf.to_pixels(item.path))


def _label_index(clf: Classifier, item: Item, n_classes: int | None) -> int:
    names = list(clf.labels or [])
    if item.label in names:
        return names.index(item.label)
    if item.label is not None and item.label.isdigit() and (n_classes is None or
                                                            int(item.label) < n_classes):
        return int(item.label)
    raise InputError(f"{item.id}: --target label needs a label the model knows, got "
                     f"{item.label!r} (the model's classes: {names or n_classes})")


def _targets(clf: Classifier, items: Sequence[Item], target: str | int,
             n_classes: int | None) -> torch.Tensor:
    """The class each map explains with ``--target label`` or ``K`` (``n_classes``: from
    the model's labels where it has them; else a class out of range is refused by the
    first method, which knows the model's outputs)."""
    if target == "label":
        return torch.tensor([_label_index(clf, it, n_classes) for it in items],
                            dtype=torch.long)
    if int(target) < 0 or (n_classes is not None and int(target) >= n_classes):
        known = f"0..{n_classes - 1}" if n_classes is not None else "numbered from 0"
        raise InputError(f"--target {target} is out of range: the model's classes are {known}")
    return torch.full((len(items),), int(target), dtype=torch.long)


def algorithms(settings: Settings) -> dict[str, methods.Method]:
    """The method objects of a scan, built once per engine worker."""
    return {m: methods.get(m)(**dict(settings.params.get(m, {}))) for m in settings.methods}


def explain_batch(clf: Classifier, algos: Mapping[str, methods.Method], settings: Settings,
                  start: int, items: Sequence[Item], x: torch.Tensor) -> BatchResult:
    """Explain one batch ``x`` (the preprocessed ``items``, positions ``start...``).

    The prediction in the index comes from the first method's own forward pass on the
    clean images (:attr:`~mindlens.explanation.Explanation.logits`), so a scan costs what
    its methods cost; only where no method gives its logits does one extra clean forward
    run. With ``target="predicted"`` the first method resolves the predicted class itself
    and the others explain that class."""
    target: torch.Tensor | None = None
    if settings.target != "predicted":
        target = _targets(clf, items, settings.target, len(clf.labels) if clf.labels else None)
    logits: torch.Tensor | None = None
    explained: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    for name, algo in algos.items():
        expl = algo.explain(clf, x, Targets(target) if target is not None else Targets(None))
        if target is None:
            target = expl.targets[:, 0].clone()
        if logits is None and expl.logits is not None:
            logits = expl.logits.float()
        explained[name] = expl.maps[:, 0].detach().float().cpu()
        seconds[name] = expl.cost.seconds / len(items)
    if logits is None:  # no method gave its clean logits
        with torch.no_grad():
            logits = clf(x).float()
    assert target is not None
    probs = clf.probabilities(logits)
    top = probs.topk(min(settings.top_k, probs.shape[1]), dim=1)
    predicted = top.indices[:, 0]
    masks = [load_mask(it.mask, clf.input_size, it.id) if it.mask else None for it in items]
    rows = []
    for i, it in enumerate(items):
        rows.append({
            "position": start + i, "id": it.id, "path": it.path, "sha256": it.sha256,
            "label": it.label, "predicted": int(predicted[i]),
            "predicted_name": clf.label(int(predicted[i])), "target": int(target[i]),
            "target_name": clf.label(int(target[i])), "mask": it.mask,
            "top_classes": [int(c) for c in top.indices[i]],
            "top_probs": [float(p) for p in top.values[i]],
        })
    maps: dict[str, np.ndarray] = {}
    native: dict[str, np.ndarray] = {}
    for name, m in explained.items():
        small = F.interpolate(m[:, None], size=(settings.size, settings.size), mode="area")
        maps[name] = small[:, 0].numpy().astype(np.float16)
        if settings.native:
            native[name] = m.numpy().astype(np.float16)
        for i, row in enumerate(rows):
            row[f"seconds_{name}"] = seconds[name]
            mask = masks[i]
            if mask is not None:
                pos = m[i].clamp(min=0)
                total = float(pos.sum())
                row[f"in_mask_{name}"] = float(pos[mask].sum()) / total if total > 0 else None
    return BatchResult(start, maps, rows, native)
