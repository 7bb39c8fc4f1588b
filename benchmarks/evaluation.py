"""The 20-image, all-method evaluation on CIFAR-sized inputs (issue 15: <= 5 minutes on a
2-core machine): ``mindlens.evaluate`` with every registered method on the 20 CIFAR-10 test
images of the assets and the ``cifar10_resnet20`` asset model, torch at ``--threads``
threads, default settings (the evaluation's own, see ``mindlens.evaluate.evaluation_params``).

Prints the load average before and after (the machine is shared: a busy one is slower),
the total, the time of the estimates, and per method the measured seconds next to the
estimate shown before the run. Run: ``python benchmarks/evaluation.py [--threads 2]
[--images 20] [--methods a,b]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets"


def load(assets: Path, images: int):
    """The asset model as a Classifier and the first ``images`` CIFAR-10 test images."""
    sys.path.insert(0, str(assets))
    import zoo  # type: ignore[import-not-found]

    import mindlens

    module, card = zoo.load("cifar10_resnet20")
    clf = mindlens.Classifier(module, card["input_size"], card["channels"], card["mean"],
                              card["std"], card["labels"], card["offset"],
                              name="cifar10_resnet20")
    files = sorted((assets / "images" / "foolbox").glob("cifar10_*.png"))[:images]
    return clf, files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--methods", default=None, help="comma-separated (default: all)")
    ap.add_argument("--assets", type=Path, default=ASSETS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    from mindlens.evaluate import evaluate

    clf, files = load(args.assets, args.images)
    names = args.methods.split(",") if args.methods else None
    marks: dict[str, float] = {}
    estimates: dict[str, float] = {}
    phase: dict[str, float] = {}

    def on_estimates(found) -> None:
        phase["estimated"] = time.perf_counter()
        estimates.update({e.method: e.seconds for e in found})
        print(f"estimates ({phase['estimated'] - t0:.1f} s): "
              + ", ".join(f"{e.method} {e.seconds:.0f} s" for e in found), flush=True)

    def progress(method: str, done: int, total: int) -> None:
        marks[method] = time.perf_counter()
        if done == total:  # live, for long runs on a busy machine
            print(f"  {method} done at {marks[method] - t0:.0f} s", flush=True)

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        table = evaluate(clf, files, methods=names, out_dir=out, progress=progress,
                         on_estimates=on_estimates)
    total = time.perf_counter() - t0
    load_after = os.getloadavg()
    print(f"{len(files)} CIFAR-10 images, cifar10_resnet20, {args.threads} thread(s); load "
          f"average (1/5/15 min) before {load_before[0]:.1f}/{load_before[1]:.1f}/"
          f"{load_before[2]:.1f}, after {load_after[0]:.1f}/{load_after[1]:.1f}/"
          f"{load_after[2]:.1f}")
    print(f"total {total:.1f} s, of which estimates {phase['estimated'] - t0:.1f} s")
    print("| method | seconds | estimate s | status |")
    print("|---|---|---|---|")
    last = phase["estimated"]
    for row in table.rows:
        name = row["method"]
        if name in marks:
            took, last = marks[name] - last, marks[name]
            print(f"| {name} | {took:.1f} | {estimates.get(name, float('nan')):.1f} | ok |")
        else:
            print(f"| {name} | - | - | {row.get('reason', row['status'])[:60]} |")


if __name__ == "__main__":
    main()
