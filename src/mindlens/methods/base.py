"""What every explanation method is: a small class with a name, what it needs from the
model, its parameters with defaults, and ``explain(classifier, x, targets)``.

The registry maps names to classes for :func:`mindlens.explain`, the CLI and the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..allocator import reusing_memory
from ..errors import InputError, NotApplicableError
from ..explanation import Explanation
from ..model import Classifier
from ..patching import model_lock
from ..provenance import stamp
from ..targets import Targets
from .chunks import check_max_batch, default_max_batch, run_in_chunks

REDUCTIONS = ("max_abs", "sum", "abs_sum", "l2")


@dataclass(frozen=True)
class Needs:
    """What a method needs from the model, from least to most access."""

    gradients: bool = False
    layer: bool = False
    hooks: bool = False
    rules: bool = False
    training: bool = False

    def describe(self) -> str:
        parts = []
        if not (self.gradients or self.layer or self.hooks or self.rules or self.training):
            return "black box: only the model's outputs"
        if self.gradients:
            parts.append("gradients")
        if self.layer:
            parts.append("a convolutional layer")
        if self.hooks:
            parts.append("Python-level access to its activations (no TorchScript)")
        if self.rules:
            parts.append("a rule for every layer type")
        if self.training:
            parts.append("a trained add-on unit")
        return ", ".join(parts)


class Method:
    """Base class: subclasses set the class attributes and implement :meth:`run`."""

    name: ClassVar[str]
    title: ClassVar[str]
    needs: ClassVar[Needs]
    #: one plain-language sentence: what the colours mean
    meaning: ClassVar[str]
    #: the paper the method comes from
    reference: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    #: the faster options a cost warning names (methods that report :meth:`passes`)
    faster: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        #: images per chunk (every method takes it; ``None``: chosen from the input size,
        #: see :mod:`mindlens.methods.chunks`)
        self.max_batch = check_max_batch(params.pop("max_batch", None))
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "none"
            raise InputError(
                f"{self.name} has no parameter {', '.join(map(repr, unknown))}; "
                f"its parameters are: {valid}"
            )
        self.params: dict[str, Any] = {**self.defaults, **params}
        self.validate()

    def validate(self) -> None:
        """Check ``self.params``; raise :class:`InputError` with the fix."""
        red = self.params.get("reduction")
        if red is not None and red not in REDUCTIONS:
            raise InputError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {red!r}")

    @property
    def signed(self) -> bool:
        return self.params.get("reduction") == "sum"

    def check(self, clf: Classifier) -> None:
        """Raise :class:`NotApplicableError` if this method cannot run on ``clf``."""
        n = self.needs
        if getattr(clf, "black_box", False) and (n.gradients or n.layer or n.hooks or n.rules
                                                 or n.training):
            raise NotApplicableError(
                f"{self.name} needs {n.describe()}, but this model is a black box (a callable "
                f"or an ONNX file): mindlens can only run it and read its outputs, so it "
                f"cannot give them. Use occlusion or area_occlusion, or load the model from "
                f"its PyTorch code and weights."
            )
        if (self.needs.hooks or self.needs.layer or self.needs.rules) and clf.scripted:
            raise NotApplicableError(
                f"{self.name} needs to hook the model's layers, but this is a TorchScript "
                f"model, which runs no Python hooks. Load the model from its Python code and "
                f"weights, or use saliency or occlusion."
            )

    def explain(self, clf: Classifier, x: torch.Tensor, targets: Targets) -> Explanation:
        """Check and run under the model's lock (:func:`~mindlens.patching.model_lock`),
        in chunks of at most ``max_batch`` images (memory stays that of one chunk; the maps
        are those of one call on the whole batch). Besides the patched sections, a run keeps
        per-model caches (LRP plans, reduced-precision copies, occlusion's clean rows) and
        runs clean forwards, and another thread's patch must never be seen by them.
        ``cost.seconds`` excludes the wait. Probability-based targets and scores follow the
        model's output kind. The result carries its provenance (:mod:`mindlens.provenance`)
        and, for images, the pixels that were explained."""
        with model_lock(clf.module), reusing_memory():
            self.check(clf)  # it may look at modules another thread's patch swaps
            start = time.perf_counter()
            output = getattr(clf, "output", "softmax")
            if targets.output != output:
                targets = replace(targets, output=output)
            size = self.max_batch or default_max_batch(x)
            if x.shape[0] <= size:
                result = self.run(clf, x, targets)
            else:
                result = run_in_chunks(lambda xs, ts: self.run(clf, xs, ts), x, targets,
                                       size)
            if output != "softmax":  # methods report softmax probabilities
                result.probs = clf.target_probabilities(x, result.targets)
                result.cost.forward += 1
            result.cost.seconds = time.perf_counter() - start
            stamp(result, clf, self.name, self.defaults, self.params)
        if x.dim() == 4:  # what was explained, for show() and notebooks
            result.extras.setdefault("pixels", torch.from_numpy(clf.display_pixels(x)))
        return result

    def passes(self, clf: Classifier, x: torch.Tensor) -> int | None:
        """Model evaluations this call will run on ``x``, where the method can say so
        before it starts (perturbation methods); ``None``: a few, not worth estimating."""
        return None

    def run(self, clf: Classifier, x: torch.Tensor, targets: Targets) -> Explanation:
        raise NotImplementedError

    @classmethod
    def describe(cls) -> str:
        return f"{cls.title}: needs {cls.needs.describe()}"


_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator that makes a method available by its ``name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"two methods are named {cls.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    """Names of all registered methods, in registration order."""
    return list(_REGISTRY)


def get(name: str) -> type[Method]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(
            f"unknown method {name!r}; available: {', '.join(_REGISTRY)}"
        ) from None


# -- helpers shared by several methods ---------------------------------------------------
def reduce_channels(raw: torch.Tensor, how: str) -> torch.Tensor:
    """``[..., C, H, W]`` -> ``[..., H, W]``; a 6-D ``[B, T, C, D, H, W]`` (volumes) ->
    ``[B, T, D, H, W]``."""
    dim = 2 if raw.dim() == 6 else -3
    ops: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "max_abs": lambda r: r.abs().amax(dim=dim),
        "sum": lambda r: r.sum(dim=dim),
        "abs_sum": lambda r: r.abs().sum(dim=dim),
        "l2": lambda r: r.pow(2).sum(dim=dim).sqrt(),
    }
    return ops[how](raw)


def upsample(maps: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Bilinear (trilinear in 3-D) upsampling of ``[B, T, *spatial]`` maps,
    ``align_corners=False``."""
    if tuple(maps.shape[2:]) == tuple(size):
        return maps
    mode = "bilinear" if len(size) == 2 else "trilinear"
    return F.interpolate(maps, size=size, mode=mode, align_corners=False)
