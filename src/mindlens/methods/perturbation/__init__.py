"""The perturbation family: methods that change the input and watch the class score,
using nothing but the model's outputs (so they also run on black boxes and TorchScript).

- :mod:`.occlusion`: sliding-window occlusion (Zeiler & Fergus 2014) and its modes (the
  default ``"auto"``: the exact map through the incremental engine where the model
  allows it); :mod:`.windows`: its window grid and the aggregation of the windows'
  drops into a pixel map; :mod:`.sensitivity`: how much the map depends on
  the occluding value;
- :mod:`.area_occlusion`: occlusion of whole regions (Rieke et al. 2018);
- :mod:`.scoring`: what they share (the watched score, the occluding value, the
  memory-bounded loop that records the score drops);
- :mod:`.incremental`, :mod:`.patched` and :mod:`.incremental_ops`: Krypton-style
  incremental inference (only the part of each layer a window can change is
  recomputed): the entry point, the patched tensor with its per-image engine, and the
  operation handlers (``patched`` <- ``incremental_ops`` <- ``incremental``, no cycle);
- :mod:`.drilldown`: Krypton's adaptive drill-down for the approximate mode.

Lower precision (bfloat16 copies of a model) is not specific to this family and lives in
:mod:`mindlens.methods.precision`.
"""

# importing registers the methods, in the order the CLI and reports list them
from . import occlusion, area_occlusion  # noqa: I001
from .area_occlusion import AreaOcclusion
from .sensitivity import baseline_sensitivity
from .occlusion import Occlusion
from .scoring import (
    BASELINE_NAMES,
    SCORES,
    Build,
    Drops,
    Fill,
    auto_batch_size,
    baseline_param,
    batch_layout,
    check_baseline,
    check_batch_size,
    check_image_or_volume,
    check_score,
    class_scores,
    gaussian_blur,
    resolve_baseline,
    score_drops,
)

# the shared helpers (what ``methods/perturbation.py`` held) are importable from here too
__all__ = [
    "BASELINE_NAMES", "SCORES", "AreaOcclusion", "Build", "Drops", "Fill", "Occlusion",
    "area_occlusion", "auto_batch_size", "baseline_param", "baseline_sensitivity",
    "batch_layout", "check_baseline", "check_batch_size", "check_image_or_volume",
    "check_score", "class_scores", "gaussian_blur", "occlusion", "resolve_baseline",
    "score_drops",
]
