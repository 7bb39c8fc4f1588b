"""Train and measure the MACE unit shipped with the demo retina model.

Run (once ``mindlens.demo`` exists)::

    python -m mindlens.methods.mace.demo_unit --out src/mindlens/demo/assets/retina_mace.safetensors

It trains on generated retina images, then measures on *fresh* images (another seed):
the fidelity (argmax of the unit's reconstructed prediction = the model's) and, for
diseased images, the lesion-localisation ratio of the top concept's map of the true class:
the share of the map's mass on the lesion mask, divided by the share a random map of the
same size puts there on average (the mask's area fraction). 1 = chance; both numbers go
into the unit's metadata under ``"demo"``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...api import explain
from ...model import Classifier
from .data import ImageSet, cache_features
from .store import TrainedUnit, load_unit
from .train import evaluate, train


def lesion_ratio(maps: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
    """``maps [N, H, W]`` (non-negative), ``masks`` bool ``[N, H, W]`` of diseased images:
    mean mass share on the masks over mean area share of the masks (chance = 1)."""
    maps = maps.clamp_min(0).double()
    masks = masks.to(torch.float64)
    total = maps.flatten(1).sum(1).clamp_min(1e-12)
    mass = (maps * masks).flatten(1).sum(1) / total
    area = masks.flatten(1).mean(1)
    return {"ratio": float(mass.mean() / area.mean().clamp_min(1e-12)),
            "mass_on_lesions": float(mass.mean()), "lesion_area": float(area.mean()),
            "median_image_ratio": float((mass / area.clamp_min(1e-12)).median()),
            "images": int(maps.shape[0])}


def measure(clf: Classifier, unit: TrainedUnit, images: np.ndarray, labels: np.ndarray,
            masks: np.ndarray, chunk: int = 64) -> dict[str, Any]:
    """Fidelity and lesion ratio on the given (fresh) images."""
    data = ImageSet(images, clf)
    cache = cache_features(clf, data, unit.attachment)
    fid = evaluate(unit.unit, clf, unit.attachment, cache)
    sick = np.flatnonzero(masks.reshape(len(masks), -1).any(1))
    top_maps = []
    for start in range(0, len(sick), chunk):
        idx = sick[start:start + chunk]
        ex = explain(clf, list(images[idx]), method="mace", unit=unit,
                     target=torch.as_tensor(labels[idx], dtype=torch.long))
        top_maps.append(ex.maps[:, 0])
    size = tuple(masks.shape[1:])
    maps = torch.cat(top_maps) if top_maps else torch.zeros(0, *size)
    if tuple(maps.shape[1:]) != size:
        maps = torch.nn.functional.interpolate(maps[:, None], size=size, mode="bilinear",
                                               align_corners=False)[:, 0]
    return {"fidelity": fid["fidelity"], "relevance_accuracy": fid["relevance_accuracy"],
            "test_images": len(images),
            "lesions": lesion_ratio(maps, torch.from_numpy(masks[sick]))}


def main(argv: list[str] | None = None) -> None:
    from ... import demo  # type: ignore[attr-defined]  # built in a parallel branch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--train", type=int, default=1500)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--concepts", type=int, default=5)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--prototypes", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(min(4, torch.get_num_threads()))
    clf = demo.load_retina_model()
    images, _labels, _masks = demo.retina.generate(args.train, seed=1000 + args.seed)
    train(clf, images, args.out, epochs=args.epochs, seed=args.seed, concepts=args.concepts,
          hidden=args.hidden, prototypes=args.prototypes, prototype_size=32)
    unit = load_unit(args.out)
    test = demo.retina.generate(args.test, seed=2000 + args.seed)
    unit.meta["demo"] = measure(clf, unit, *test)
    unit.save(args.out)
    print(unit.meta["demo"], f"{args.out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
