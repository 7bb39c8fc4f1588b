"""``explain(clf, x, method="mace", unit="unit.safetensors")``: concept explanations from
a trained MACE unit (Kumar et al. 2020, arXiv:2011.01472; spec ``methods.md`` §8.5).

For every explained class (the predicted one by default, any class on request: every
class owns its concepts, so a non-predicted or true class needs no extra computation)
the concepts are ranked by their contribution ``rho_{c,q}`` to the class relevance logit
(positive: evidence for the class, negative: against). ``maps`` is, per target, the map
of the top-ranked concept (``maps="top"``, default, non-negative) or the
relevance-weighted sum ``sum_q rho_{c,q} M_{c,q}`` (``maps="weighted"``, signed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...errors import InputError, NotApplicableError
from ...explanation import Cost, Explanation
from ...model import Classifier
from ...targets import Targets, probabilities
from ..base import Method, Needs, register, upsample
from .attach import FeatureCapture, head_logits
from .store import TrainedUnit, load_unit

_CACHE: dict[tuple[str, int, int], TrainedUnit] = {}


def get_unit(unit: str | Path | TrainedUnit) -> TrainedUnit:
    """A loaded unit, read once per file version."""
    if isinstance(unit, TrainedUnit):
        return unit
    path = Path(unit)
    stat = path.stat() if path.exists() else None
    key = (str(path.resolve()), stat.st_mtime_ns if stat else 0, stat.st_size if stat else 0)
    if key not in _CACHE:
        _CACHE[key] = load_unit(path)
    return _CACHE[key]


@register
class Mace(Method):
    """MACE concept explanations; needs a unit trained with :func:`mindlens.methods.mace.train`."""

    name = "mace"
    title = "MACE concepts"
    needs = Needs(layer=True, hooks=True, training=True)
    meaning = ("Each concept is a part of the image the model has learnt to look for; the map "
               "shows where the most relevant concept for the class is found.")
    reference = "Kumar et al. 2020, MACE, arXiv:2011.01472"
    defaults = {"unit": None, "maps": "top"}

    def validate(self) -> None:
        if self.params["unit"] is None:
            raise InputError("method 'mace' needs unit=PATH, a MACE unit file trained for this "
                             "model (`mindlens mace train --model CARD --data DIR --out PATH`)")
        if self.params["maps"] not in ("top", "weighted"):
            raise InputError(f"maps must be 'top' or 'weighted', got {self.params['maps']!r}")

    @property
    def signed(self) -> bool:
        return self.params["maps"] == "weighted"

    def run(self, clf: Classifier, x: torch.Tensor, targets: Targets) -> Explanation:
        tu = get_unit(self.params["unit"])
        tu.check(clf)
        cfg = tu.unit.config
        expected = tuple(tu.meta.get("input_size", x.shape[2:]))
        if tuple(x.shape[2:]) != expected:
            raise InputError(
                f"the input is {tuple(x.shape[2:])} but the MACE unit was trained on "
                f"{expected} inputs (its embeddings read {cfg.height}x{cfg.width} feature "
                f"maps); pass files or arrays, which are resized to the model's input size")
        if targets.score_fn is not None:
            raise NotApplicableError("MACE explains classes; give class indices as target")
        feats, logits = FeatureCapture(clf, tu.attachment.layer).run(x, watch=[])
        dtype = tu.unit.keep.dtype
        with torch.no_grad():
            out = tu.unit(feats.to(device="cpu", dtype=dtype))
            p_hat = head_logits(clf, tu.attachment.head_module(clf),
                                out.z_hat.to(clf.dtype).to(clf.device)).softmax(1).cpu()
        logits = logits.cpu()
        classes = targets.resolve(logits)
        b_idx = torch.arange(x.shape[0])[:, None]
        rho = out.rho[b_idx, classes]  # [B, T, P]
        keep = tu.unit.keep[classes].bool()  # [B, T, P]
        order = rho.masked_fill(~keep, float("-inf")).argsort(dim=2, descending=True)
        ranked_rho = rho.gather(2, order)
        cmaps = out.maps[b_idx, classes]  # [B, T, P, h, w]
        cmaps = cmaps.gather(2, order[..., None, None].expand_as(cmaps))
        size = tuple(x.shape[2:])
        up = upsample(cmaps.flatten(1, 2), size).view(*cmaps.shape[:3], *size)
        if self.params["maps"] == "top":
            maps = up[:, :, 0]
        else:
            maps = (ranked_rho[..., None, None] * up * keep.gather(2, order)[..., None, None]
                    ).sum(2)
        concepts: dict[str, Any] = {
            "index": order, "relevance": ranked_rho, "pruned": ~keep.gather(2, order),
            "maps": up, "native_maps": cmaps, "prototypes": None,
        }
        if tu.prototypes is not None:
            concepts["prototypes"] = tu.prototypes.crops[classes[..., None], order]
        agrees = p_hat.argmax(1) == logits.argmax(1)
        return Explanation(
            logits=logits.detach(),
            method=self.name, maps=maps, targets=classes, scores=logits.gather(1, classes),
            probs=probabilities(logits, classes), signed=self.signed,
            params={"unit": str(self.params["unit"]) if not isinstance(
                self.params["unit"], TrainedUnit) else "<in memory>",
                "maps": self.params["maps"], "layer": tu.attachment.layer, "score": "logit"},
            native_shape=(cfg.height, cfg.width), cost=Cost(forward=1),
            extras={
                "concepts": concepts,
                "relevance": out.relevance[b_idx, classes],
                "surrogate_probs": p_hat.gather(1, classes),
                "surrogate_agrees": agrees,
                "fidelity": tu.fidelity,
                "fidelity_on": tu.meta.get("fidelity_on"),
            },
        )
