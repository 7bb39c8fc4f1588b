"""MACE: Model Agnostic Concept Extractor (Kumar et al. 2020, arXiv:2011.01472).

A small unit trained on a frozen CNN's last feature map explains its decisions with
per-class concepts and their relevance. :func:`train` builds a unit file;
``mindlens.explain(clf, x, method="mace", unit=PATH)`` uses it.
"""

from .attach import Attachment, attach, model_fingerprint
from .method import Mace
from .store import Prototypes, TrainedUnit, load_unit
from .train import evaluate, train
from .unit import MaceUnit, UnitConfig, mace_losses, triplet_loss

__all__ = [
    "Attachment", "Mace", "MaceUnit", "Prototypes", "TrainedUnit", "UnitConfig", "attach",
    "evaluate", "load_unit", "mace_losses", "model_fingerprint", "train", "triplet_loss",
]
