"""Explanation methods, one module per family, all reachable by name.

>>> from mindlens import methods
>>> methods.names()[:3]
['saliency', 'guided_backprop', 'deconvnet']
"""

# importing registers the methods
from . import area_occlusion, cam, gradient, lrp, mace, occlusion  # noqa: F401
from .base import Method, Needs, get, names, register

__all__ = ["Method", "Needs", "get", "names", "register"]
