"""mindlens: read the mind of a CNN image classifier.

Explanation methods (gradients, CAMs, ...), their measured trustworthiness on your model
and data, and reports a non-expert can follow.
"""

from . import methods
from .api import explain, explain_all
from .blackbox import BlackBox
from .errors import InputError, InputWarning, MindlensError, ModelError, NotApplicableError
from .explanation import Cost, Explanation
from .model import Classifier, InputSpec
from .model_card import load_model
from .notebook import show

__version__ = "0.1.0"

__all__ = [
    "BlackBox", "Classifier", "Cost", "Explanation", "InputError", "InputSpec", "InputWarning",
    "MindlensError", "ModelError", "NotApplicableError", "audit", "explain", "explain_all",
    "load_model", "methods", "scan", "show",
]


def __getattr__(name: str) -> object:
    """``mindlens.scan`` and ``mindlens.audit``, imported on first use (SciPy, Zarr)."""
    if name == "scan":
        from .scans import scan

        return scan
    if name == "audit":
        from .spray import audit

        return audit
    raise AttributeError(f"module 'mindlens' has no attribute {name!r}")
