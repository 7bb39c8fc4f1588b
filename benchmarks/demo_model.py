"""Measure the bundled demo models on 1,000 fresh images (a seed used neither in training
nor in the training run's test): the retina model's accuracy and how often Grad-CAM points
at a lesion, and the shortcut model's accuracies and Grad-CAM mass on the marker.

    PYTHONPATH=src python benchmarks/demo_model.py [--n 1000] [--seed 4242] [--threads 2]
                                                   [--models retina,shortcut] [--card CARD]

Grad-CAM uses ``layer="auto"`` and the class ``diseased``. Pointing game (Zhang et al.
2016, :func:`mindlens.metrics.pointing_game`): a hit when the map's maximum lies within
``--tolerance`` pixels (default 4) of a lesion pixel, over the diseased eyes; "chance" is
what a point drawn uniformly at random scores on the same masks. Relevance mass
(:func:`mindlens.metrics.relevance_mass_accuracy`): the share of the map on the lesions.
Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src")]


def predict(clf, images: np.ndarray, batch: int = 250) -> np.ndarray:
    out = [clf.predict(clf.preprocess(list(images[i:i + batch])))
           for i in range(0, len(images), batch)]
    return torch.cat(out).argmax(1).numpy()


def retina_figures(n: int, seed: int, tolerance: float, cards: list[str]) -> dict:
    from mindlens import load_model
    from mindlens.demo import card_path, retina
    from mindlens.demo.train import gradcam_pointing
    from mindlens.evaluate import chance_levels

    images, labels, masks = retina.generate(n, seed)
    sick = masks[labels == 1]
    chance = chance_levels([torch.from_numpy(m) for m in sick], tolerance)
    out: dict = {"images": n, "chance_pointing_game": chance["pointing_game"]}
    for card in cards or [str(card_path("retina"))]:
        clf = load_model(card)
        acc = float((predict(clf, images) == labels).mean())
        out[card] = {"accuracy": acc, **gradcam_pointing(clf, images, labels, masks, tolerance)}
    return out


def shortcut_figures(n: int, seed: int) -> dict:
    from mindlens import explain
    from mindlens.demo import load_shortcut_model, shortcut

    clf = load_shortcut_model()
    out: dict = {"images": n}
    for split, key in (("train", "marker_on_diseased"), ("test", "no_marker"),
                       ("swapped", "marker_on_healthy")):
        x, y, _, marks = shortcut.generate(n, seed, split=split)
        out[f"accuracy_{key}"] = float((predict(clf, x) == y).mean())
    healthy = np.flatnonzero(y == 0)  # the swapped split: the marker on the healthy eyes
    share, area = [], []
    for i in range(0, len(healthy), 100):
        idx = healthy[i:i + 100]
        maps = explain(clf, list(x[idx]), "gradcam", target=1).maps[:, 0].double().numpy()
        share.append((maps * marks[idx]).sum((1, 2)) / np.maximum(maps.sum((1, 2)), 1e-12))
        area.append(marks[idx].mean((1, 2)))
    s, a = np.concatenate(share), np.concatenate(area)
    out["gradcam_mass_on_marker_median"] = float(np.median(s))
    out["gradcam_mass_on_marker_over_area_median"] = float(np.median(s / a))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--tolerance", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="retina,shortcut")
    ap.add_argument("--card", action="append", default=[],
                    help="a retina model card to measure instead of the bundled one "
                    "(repeat to compare candidates on the same images)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    figures = {}
    if "retina" in args.models:
        figures["retina"] = retina_figures(args.n, args.seed, args.tolerance, args.card)
    if "shortcut" in args.models:
        figures["shortcut"] = shortcut_figures(args.n, args.seed)
    figures["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
