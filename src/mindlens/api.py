"""The one-call entry point: ``mindlens.explain(classifier, images, method=...)``."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from . import methods, progress
from .explanation import Explanation
from .metrics.input_dependence import input_independence_note
from .model import Classifier, ImageLike
from .targets import TargetLike, Targets, class_index


def class_names_to_indices(classifier: Classifier, target: str | Sequence[str]
                           ) -> int | list[int]:
    """A class name (or one per image) -> its index in the classifier's labels."""
    if isinstance(target, str):
        return class_index(classifier.labels, target)
    return [class_index(classifier.labels, t) for t in target]


def explain(
    classifier: Classifier,
    images: ImageLike | Sequence[ImageLike],
    method: str = "gradcam",
    target: TargetLike | str | Sequence[str] = None,
    top_k: int = 1,
    layer: Any = "auto",
    threshold: float | None = None,
    max_pixels: int | None = None,
    **params: Any,
) -> Explanation:
    """Explain the classifier's decision on ``images`` with one method.

    ``images``: a path, PIL image or array (or a list of them), preprocessed per the
    classifier's input spec; or a tensor ``[B, C, H, W]`` taken as already in model space.
    ``target``: ``None`` (the ``top_k`` predicted classes), a class index or name
    (``"tabby cat"``; a typo gets a did-you-mean), one per image, or a callable
    ``logits -> score per image``. ``threshold`` (with ``target=None``): explain every
    class whose probability (per the classifier's ``output`` kind) is at least this, e.g.
    every finding of a multi-label model above 0.5. ``layer`` is used by layer-based
    methods (``"auto"``: the last spatial feature map). Other keywords are the method's
    parameters (see ``mindlens.methods.get(name).defaults``); every method also takes
    ``max_batch``, the images per chunk (default: from the input size, see
    :mod:`mindlens.methods.chunks`). ``max_pixels``: the largest image file read (default
    50 megapixels). A perturbation method that will run long warns first with its estimate
    (:class:`~mindlens.errors.CostWarning`, see :mod:`mindlens.progress`). When different
    images of the batch explained for the same class get the same map,
    ``extras["input_independent"]`` says so and a warning is issued (the map then does not
    depend on the image).
    """
    cls = methods.get(method)
    if "layer" in cls.defaults:
        params["layer"] = layer
    algo = cls(**params)
    if isinstance(target, str) or (isinstance(target, (list, tuple)) and target
                                   and all(isinstance(t, str) for t in target)):
        target = class_names_to_indices(classifier, target)
    x = classifier.preprocess(images, max_pixels=max_pixels)
    targets = Targets(target, top_k, threshold, classifier.output)
    with progress.watch(algo, classifier, x):
        expl = algo.explain(classifier, x, targets)
    note = input_independence_note(x, expl.maps, expl.targets)
    if note:
        expl.extras["input_independent"] = note
        warnings.warn(f"{method}: {note}", stacklevel=2)
    return expl


def explain_all(
    classifier: Classifier,
    images: ImageLike | Sequence[ImageLike],
    method_names: Sequence[str],
    **kwargs: Any,
) -> dict[str, Explanation]:
    """Run several methods on the same batch; preprocessing happens once."""
    x = classifier.preprocess(images)
    return {name: explain(classifier, x, name, **kwargs) for name in method_names}
