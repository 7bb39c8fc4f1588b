#!/usr/bin/env python3
"""Many threads, one model: every registered method from N threads for at least S seconds
on ResNet-20 (CIFAR-10, shared assets) and on a small train-mode model (BatchNorm, Dropout,
spectral norm); the model must be bit-identical afterwards and every map equal to the map
of the same call run alone (issue #11, "Must show: threads").

    PYTHONPATH=src:. MINDLENS_ASSETS=../shared/assets \\
        python benchmarks/threads.py [--threads 8] [--seconds 30] [--json OUT.json]

Exit code 0 when both models pass. Calls on one model serialise on its lock (see the
README, "Concurrency"), so the count of calls measures throughput under contention, not
speed-up.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.conftest import asset_images, load_asset  # noqa: E402
from tests.test_concurrency import calls, hammer, train_mode_classifier  # noqa: E402

import mindlens  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from mindlens.methods.mace import train

    resnet = load_asset("cifar10_resnet20")
    unit = Path(tempfile.mkdtemp()) / "unit.safetensors"
    train(resnet, asset_images("foolbox/cifar10_*")[:8], unit, epochs=1, seed=0,
          concepts=2, hidden=8, val_fraction=0.25, prototypes=0)
    torch.manual_seed(0)
    cases = [
        ("cifar10_resnet20", resnet, torch.randn(2, 3, 32, 32),
         calls(mindlens.methods.names(), {"mace": {"unit": str(unit)}})),
        ("train-mode net", train_mode_classifier(), torch.randn(2, 3, 16, 16),
         calls([n for n in mindlens.methods.names() if n != "mace"])),
    ]
    report = {}
    ok = True
    for name, clf, x, todo in cases:
        out = hammer(clf, x, todo, threads=args.threads, seconds=args.seconds)
        passed = out["untouched"] and not out["mismatches"] and not out["crashed"]
        ok &= passed
        report[name] = {"threads": args.threads, "calls": out["calls"],
                        "seconds": round(out["seconds"], 1), "untouched": out["untouched"],
                        "mismatches": len(out["mismatches"]), "crashed": len(out["crashed"]),
                        "methods": out["applicable"], "not_applicable": out["not_applicable"],
                        "passed": passed}
        print(f"{name}: {args.threads} threads, {out['calls']} calls in "
              f"{out['seconds']:.1f} s over {len(out['applicable'])} method settings "
              f"({', '.join(out['applicable'])}); model untouched: {out['untouched']}; "
              f"maps differing from the single-threaded twin: {len(out['mismatches'])}; "
              f"crashes: {len(out['crashed'])}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
