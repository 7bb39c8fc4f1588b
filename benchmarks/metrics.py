"""mindlens metrics against Quantus 0.6.0 on the same inputs: seconds per call, measured
side by side in one run, cases in turns (``--repeat`` rounds, medians).

ResNet-20 (CIFAR-10 asset), 8 real CIFAR-10 images, saliency maps. Quantus is configured as
in ``tests/metrics/test_quantus_match.py`` (``normalise=False``, ``abs`` per definition,
the same explain function); the robustness metrics draw the same number of noise samples
and both get the clean maps (Quantus' ``a_batch``, mindlens' ``base``),
the faithfulness pair flips the same number of pixels per step (deletion: ``steps`` steps
of ``H*W/steps`` pixels, all channels, against ``PixelFlipping`` with the same
``features_in_step``). Run: ``python benchmarks/metrics.py [--repeat 3] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from run import _torchvision_stub

from mindlens.allocator import give_back

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets"


def setup(assets: Path):
    sys.path.insert(0, str(assets))
    import zoo  # type: ignore[import-not-found]

    import mindlens

    module, card = zoo.load("cifar10_resnet20")
    clf = mindlens.Classifier(module, card["input_size"], card["channels"], card["mean"],
                              card["std"], card["labels"], card["offset"])
    files = sorted((assets / "images" / "foolbox").glob("cifar10_*.png"))[:8]
    x = clf.preprocess(files)
    return clf, x


def cases(clf, x, samples: int, steps: int):
    import quantus

    from mindlens import metrics

    explain = metrics.method_explainer("saliency")
    classes = clf.predict(x).argmax(dim=1)
    maps = explain(clf, x, classes)
    masks = torch.zeros_like(maps, dtype=torch.bool)
    masks[:, 8:24, 8:24] = True
    radius = metrics.robustness.default_radius(clf, x)
    a = maps.numpy()[:, None].copy()
    s = masks.numpy()[:, None].astype(float)
    xb, yb = x.numpy(), classes.numpy()

    def explain_np(model, inputs, targets, **kwargs):
        t = torch.as_tensor(inputs, dtype=x.dtype)
        return explain(clf, t, torch.as_tensor(targets)).numpy()[:, None]

    def q(metric, **kw):
        return lambda: metric(model=clf.module, x_batch=xb, y_batch=yb, a_batch=a,
                              device="cpu", **kw)

    h, w = maps.shape[1:]
    return {
        "max_sensitivity": (
            lambda: metrics.sensitivity(explain, clf, x, classes, radius=radius,
                                        n_samples=samples, base=maps),
            q(quantus.MaxSensitivity(nr_samples=samples, normalise=False, abs=False,
                                     lower_bound=radius, disable_warnings=True),
              explain_func=explain_np)),
        "avg_sensitivity": (
            lambda: metrics.avg_sensitivity(explain, clf, x, classes=classes, radius=radius,
                                            n_samples=samples, base=maps),
            q(quantus.AvgSensitivity(nr_samples=samples, normalise=False, abs=False,
                                     lower_bound=radius, disable_warnings=True),
              explain_func=explain_np)),
        "deletion (pixel flipping)": (
            lambda: metrics.deletion_auc(clf, x, maps, steps, classes=classes),
            q(quantus.PixelFlipping(features_in_step=h * w // steps, normalise=False,
                                    abs=False, perturb_baseline="black",
                                    return_auc_per_sample=True, disable_warnings=True))),
        "pointing game": (
            lambda: metrics.pointing_game(maps, masks, 0),
            q(quantus.PointingGame(abs=False, normalise=False, disable_warnings=True),
              s_batch=s)),
        "relevance mass accuracy": (
            lambda: metrics.relevance_mass_accuracy(maps, masks),
            q(quantus.RelevanceMassAccuracy(abs=False, normalise=False,
                                            disable_warnings=True), s_batch=s)),
        "sparseness": (
            lambda: metrics.sparseness(maps),
            q(quantus.Sparseness(abs=True, normalise=False, disable_warnings=True))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--assets", type=Path, default=ASSETS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    _torchvision_stub()
    if not hasattr(np, "trapz"):  # Quantus 0.6 calls np.trapz, gone in NumPy 2
        np.trapz = np.trapezoid
    clf, x = setup(args.assets)
    table = cases(clf, x, args.samples, args.steps)
    times: dict[str, dict[str, list[float]]] = {k: {"mindlens": [], "quantus": []}
                                                 for k in table}
    for _ in range(args.repeat):
        for name, (ours, theirs) in table.items():
            for who, fn in (("mindlens", ours), ("quantus", theirs)):
                t0 = time.perf_counter()
                fn()
                times[name][who].append(time.perf_counter() - t0)
                give_back()  # no case runs on the memory mindlens keeps after a call
    print(f"{len(x)} CIFAR-10 images, ResNet-20, saliency maps, {args.threads} thread(s), "
          f"median of {args.repeat}")
    print("| metric | mindlens ms | Quantus ms | speed-up |")
    print("|---|---|---|---|")
    for name, t in times.items():
        ours, theirs = statistics.median(t["mindlens"]), statistics.median(t["quantus"])
        print(f"| {name} | {1000 * ours:.1f} | {1000 * theirs:.1f} | "
              f"{theirs / ours if ours > 0 else np.inf:.1f}x |")


if __name__ == "__main__":
    main()
