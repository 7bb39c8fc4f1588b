"""What a method costs and needs: native resolution, passes and time per image, and the
level of model access (black box ... training)."""

from __future__ import annotations

import math

from ..explanation import Explanation
from ..methods.base import Method, Needs

#: access levels from least to most (the seed's "model agnosticism" criterion)
ACCESS_LEVELS = ("black box", "gradients", "a layer", "per-layer rules", "training")


def native_resolution(expl: Explanation) -> float:
    """Input pixels per native map cell (1.0 = pixel-exact; 16.0 for a 2x2 map of 8x8
    inputs). Falls back to 1.0 when the method did not state its native shape."""
    full = math.prod(expl.maps.shape[2:])
    native = math.prod(expl.native_shape) if expl.native_shape else full
    return full / max(1, native)


def cost_per_image(expl: Explanation) -> dict[str, float]:
    """Forward and backward passes and milliseconds per image and target.

    ``Cost.forward``/``backward`` count batched passes, so passes per image are the same
    numbers; the time is divided by the batch size and the number of targets.
    """
    n = expl.batch_size * max(1, int(expl.maps.shape[1]))
    return {
        "forward": float(expl.cost.forward),
        "backward": float(expl.cost.backward) / max(1, int(expl.maps.shape[1])),
        "ms": 1000.0 * expl.cost.seconds / n,
    }


def model_access(method: type[Method] | Method | Needs) -> str:
    """The most demanding access level the method needs, one of :data:`ACCESS_LEVELS`."""
    needs = method if isinstance(method, Needs) else method.needs
    if needs.training:
        return "training"
    if needs.rules:
        return "per-layer rules"
    if needs.layer or needs.hooks:
        return "a layer"
    if needs.gradients:
        return "gradients"
    return "black box"
