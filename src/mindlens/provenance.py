"""How an explanation was made, recorded with it.

Every :class:`~mindlens.explanation.Explanation` leaves :meth:`Method.explain
<mindlens.methods.base.Method.explain>` with ``params`` holding the method's parameters
with their defaults filled in, the layer actually used (``"auto"`` resolved), and under
``params["provenance"]`` the method name, the targets per map with their labels, the model
card's SHA-256 (when the classifier came from a card) and the mindlens version. The
report, ``summary.json`` and the ``.npz`` files copy this record.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

#: the keys every provenance record carries
FIELDS = ("method", "params", "layer", "targets", "labels", "model", "model_card_sha256",
          "mindlens_version")


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file (a model card)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _plain(value: Any) -> Any:
    """JSON-ready copy of a parameter value (tensors and paths become lists and strings)."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if callable(value):
        return getattr(value, "__name__", type(value).__name__)
    return str(value)


def stamp(expl: Any, clf: Any, method: str, defaults: dict[str, Any],
          params: dict[str, Any]) -> None:
    """Fill ``expl.params`` in place: defaults, then the call's ``params``, then what the
    method itself recorded (the resolved layer wins over ``"auto"``), plus the
    ``"provenance"`` record (see the module docstring)."""
    from . import __version__

    # what the method recorded wins; the rest is made JSON-ready (a callable becomes its
    # name), so that the explanation still saves and loads with weights_only=True
    filled = {**_plain({**defaults, **params}), **expl.params}
    filled.pop("provenance", None)
    targets = expl.targets.tolist()
    filled["provenance"] = {
        "method": method,
        "params": _plain({k: v for k, v in filled.items() if k != "provenance"}),
        "layer": filled.get("layer") if isinstance(filled.get("layer"), str) else None,
        "targets": targets,
        "labels": [[clf.label(c) if c >= 0 else "custom score" for c in row]
                   for row in targets],
        "model": getattr(clf, "name", None),
        "model_card_sha256": getattr(clf, "card_sha256", None),
        "mindlens_version": __version__,
    }
    expl.params = filled


def record(expl: Any, image: int = 0) -> dict[str, Any]:
    """The provenance record of one image of an explanation (targets and labels of that
    image only), with what the method measured about itself: an approximate occlusion's
    ``approximation`` (its checked error) and LRP's ``conservation`` (relevance sum /
    score per target)."""
    rec = dict(expl.params.get("provenance") or {})
    if rec:
        rec["targets"] = rec["targets"][image]
        rec["labels"] = rec["labels"][image]
    approx = expl.extras.get("approximation")
    if approx is not None:
        rec["approximation"] = _plain(approx)
    for key in ("exact_path", "input_independent"):  # how occlusion ran; a map that
        if expl.extras.get(key):                     # ignores the image (see api.explain)
            rec[key] = _plain(expl.extras[key])
    cons = expl.extras.get("conservation")
    if isinstance(cons, torch.Tensor) and cons.dim() == 2:
        rec["conservation"] = cons[image].float().tolist()
    return rec
