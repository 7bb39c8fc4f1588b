"""Explanation methods, one module per family, all reachable by name.

>>> from mindlens import methods
>>> methods.names()[:3]
['saliency', 'guided_backprop', 'deconvnet']
"""

# importing registers the methods (in this order: the order the CLI and reports list them)
from . import cam, gradient, lrp, mace  # noqa: F401, I001
from . import cam_variants, cam_scores  # noqa: F401  (Grad-CAM variants, Score/Ablation-CAM)
from . import attribution, smoothgrad  # noqa: F401  (path and noise attributions)
from .perturbation import occlusion, area_occlusion  # noqa: F401  (perturbation family last)
from . import rise  # noqa: F401
from .base import Method, Needs, get, names, register

__all__ = ["Method", "Needs", "get", "names", "register"]
