"""The unit file: one ``.safetensors`` file with the unit's weights, its prototype crops
and a JSON metadata record (shapes, attachment, fingerprint of the base model, fidelity).

safetensors holds only tensors and strings, so loading a unit never runs code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors.torch import safe_open as _safe_open

from ...errors import InputError
from ...model import Classifier
from .attach import Attachment, check_fingerprint
from .unit import MaceUnit, UnitConfig

FORMAT = "mindlens-mace/1"
META_KEY = "mindlens_mace"


@dataclass
class Prototypes:
    """For each concept ``(c, q)`` the ``n`` training images where ``rho_{c,q}`` is largest:
    ``crops`` uint8 ``[K, P, n, S, S, 3]`` (the image region around the concept map's
    peak), ``index`` (image number in the training set) and ``rho`` ``[K, P, n]``."""

    crops: torch.Tensor
    index: torch.Tensor
    rho: torch.Tensor


@dataclass
class TrainedUnit:
    """A MACE unit with everything needed to run it on its base model."""

    unit: MaceUnit
    attachment: Attachment
    meta: dict[str, Any] = field(default_factory=dict)
    prototypes: Prototypes | None = None

    @property
    def fidelity(self) -> float | None:
        return self.meta.get("fidelity")

    def check(self, clf: Classifier) -> None:
        check_fingerprint(clf, self.meta["fingerprint"], self.meta.get("model_name", "?"))

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tensors = {f"unit.{k}": v.detach().float().cpu().contiguous()
                   for k, v in self.unit.state_dict().items()}
        if self.prototypes is not None:
            tensors["prototypes.crops"] = self.prototypes.crops.contiguous()
            tensors["prototypes.index"] = self.prototypes.index.contiguous()
            tensors["prototypes.rho"] = self.prototypes.rho.float().contiguous()
        meta = dict(self.meta, format=FORMAT, config=self.unit.config.to_dict(),
                    layer=self.attachment.layer, head=self.attachment.head)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
        tmp.replace(path)


def load_unit(path: str | Path) -> TrainedUnit:
    """Read a unit file written by :meth:`TrainedUnit.save`."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"MACE unit file not found: {path} (train one with `mindlens mace "
                         f"train --model CARD --data DIR --out {path.name}`)")
    try:
        with _safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise InputError(f"cannot read MACE unit {path}: {err}") from None
    if raw is None:
        raise InputError(f"{path} is a safetensors file but not a MACE unit (no "
                         f"{META_KEY!r} metadata)")
    meta = json.loads(raw)
    if meta.get("format") != FORMAT:
        raise InputError(f"{path} has unit format {meta.get('format')!r}; this mindlens "
                         f"reads {FORMAT!r}")
    unit = MaceUnit(UnitConfig(**meta.pop("config")))
    unit.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("unit.")})
    unit.eval().requires_grad_(False)
    protos = None
    if "prototypes.crops" in tensors:
        protos = Prototypes(tensors["prototypes.crops"], tensors["prototypes.index"],
                            tensors["prototypes.rho"])
    attachment = Attachment(meta.pop("layer"), meta.pop("head"))
    return TrainedUnit(unit, attachment, meta, protos)
