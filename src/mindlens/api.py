"""The one-call entry point: ``mindlens.explain(classifier, images, method=...)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import methods, progress
from .explanation import Explanation
from .model import Classifier, ImageLike
from .targets import TargetLike, Targets


def explain(
    classifier: Classifier,
    images: ImageLike | Sequence[ImageLike],
    method: str = "gradcam",
    target: TargetLike = None,
    top_k: int = 1,
    layer: Any = "auto",
    max_pixels: int | None = None,
    **params: Any,
) -> Explanation:
    """Explain the classifier's decision on ``images`` with one method.

    ``images``: a path, PIL image or array (or a list of them), preprocessed per the
    classifier's input spec; or a tensor ``[B, C, H, W]`` taken as already in model space.
    ``target``: ``None`` (the ``top_k`` predicted classes), a class index, one index per
    image, or a callable ``logits -> score per image``. ``layer`` is used by layer-based
    methods (``"auto"``: the last spatial feature map). Other keywords are the method's
    parameters (see ``mindlens.methods.get(name).defaults``); every method also takes
    ``max_batch``, the images per chunk (default: from the input size, see
    :mod:`mindlens.methods.chunks`). ``max_pixels``: the largest image file read (default
    50 megapixels). A perturbation method that will run long warns first with its estimate
    (:class:`~mindlens.errors.CostWarning`, see :mod:`mindlens.progress`).
    """
    cls = methods.get(method)
    if "layer" in cls.defaults:
        params["layer"] = layer
    algo = cls(**params)
    x = classifier.preprocess(images, max_pixels=max_pixels)
    targets = Targets(target, top_k)
    with progress.watch(algo, classifier, x):
        return algo.explain(classifier, x, targets)


def explain_all(
    classifier: Classifier,
    images: ImageLike | Sequence[ImageLike],
    method_names: Sequence[str],
    **kwargs: Any,
) -> dict[str, Explanation]:
    """Run several methods on the same batch; preprocessing happens once."""
    x = classifier.preprocess(images)
    return {name: explain(classifier, x, name, **kwargs) for name in method_names}
