"""The one-call entry point: ``mindlens.explain(classifier, images, method=...)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import methods
from .explanation import Explanation
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
    **params: Any,
) -> Explanation:
    """Explain the classifier's decision on ``images`` with one method.

    ``images``: a path, PIL image or array (or a list of them), preprocessed per the
    classifier's input spec; or a tensor ``[B, C, H, W]`` taken as already in model space.
    ``target``: ``None`` (the ``top_k`` predicted classes), a class index or name
    (``"tabby cat"``; a typo gets a did-you-mean), one per image, or a callable
    ``logits -> score per image``. ``layer`` is used by layer-based
    methods (``"auto"``: the last spatial feature map). Other keywords are the method's
    parameters (see ``mindlens.methods.get(name).defaults``).
    """
    cls = methods.get(method)
    if "layer" in cls.defaults:
        params["layer"] = layer
    algo = cls(**params)
    if isinstance(target, str) or (isinstance(target, (list, tuple)) and target
                                   and all(isinstance(t, str) for t in target)):
        target = class_names_to_indices(classifier, target)
    x = classifier.preprocess(images)
    return algo.explain(classifier, x, Targets(target, top_k))


def explain_all(
    classifier: Classifier,
    images: ImageLike | Sequence[ImageLike],
    method_names: Sequence[str],
    **kwargs: Any,
) -> dict[str, Explanation]:
    """Run several methods on the same batch; preprocessing happens once."""
    x = classifier.preprocess(images)
    return {name: explain(classifier, x, name, **kwargs) for name in method_names}
