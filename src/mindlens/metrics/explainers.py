"""Explain callables for the metrics that re-run a method (sensitivity, randomisation,
class discrimination): ``explain(clf, x, classes) -> maps [N, H, W]``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .. import methods
from ..model import Classifier
from ..targets import Targets

ExplainFn = Callable[[Classifier, torch.Tensor, torch.Tensor], torch.Tensor]


def method_explainer(name: str, **params: Any) -> ExplainFn:
    """An explain callable for the registered method ``name`` with ``params``: the map of
    class ``classes[i]`` for image ``i``, as the method returns it (raw, signed if signed)."""
    cls = methods.get(name)
    algo = cls(**params)

    def explain(clf: Classifier, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        expl = algo.explain(clf, x, Targets(classes.reshape(-1, 1)))
        return expl.maps[:, 0]

    explain.__name__ = f"explain_{name}"
    return explain
