"""Layer-wise Relevance Propagation: rules (:mod:`.rules`), composites
(:mod:`.composites`), canonization (:mod:`.canonizers`), functional ops
(:mod:`.functional`), the modified forward/backward pass (:mod:`.core`) and the methods
``lrp``, ``sglrp`` and ``clrp`` (:mod:`.methods`); plans are cached per model
(:mod:`.cache`)."""

from . import composites, rules
from .cache import clear_cache
from .composites import Composite
from .methods import CLRP, LRP, SGLRP, sglrp_init

__all__ = ["CLRP", "LRP", "SGLRP", "Composite", "clear_cache", "composites", "rules", "sglrp_init"]
