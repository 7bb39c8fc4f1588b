"""Time mindlens ``lrp`` on an EfficientNet-B0-shaped network (torchvision's stage layout:
MBConv blocks with squeeze-and-excitation gates, SiLU, BatchNorm, stochastic depth;
random weights) against one forward and one forward+backward to the input, float32,
224x224. Also the ConvNeXt- and MobileNetV3-style test models of tests/modern_nets.py at
their small sizes (overhead-bound).

    PYTHONPATH=src python benchmarks/lrp_modern.py [--reps 5] [--threads 1]

Prints median ms per image and the ratio to forward+backward; the cases take turns within
each repetition, so load changes on a shared machine hit every case alike.
Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

# (expand, kernel, stride, in, out, repeats): torchvision efficientnet_b0
B0 = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
      (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]


def efficientnet_b0(classes: int = 1000) -> nn.Module:
    from tests.modern_nets import ConvNormAct, MBConv

    layers: list[nn.Module] = [ConvNormAct(3, 32, 3, 2)]
    for expand, k, stride, cin, cout, reps in B0:
        for i in range(reps):
            layers.append(MBConv(cin if i == 0 else cout, cout, expand, k,
                                 stride if i == 0 else 1))
    layers.append(ConvNormAct(320, 1280, 1))
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
                          nn.Dropout(0.2), nn.Linear(1280, classes))
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batches", default="1,4")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from tests import modern_nets as mn

    import mindlens

    torch.manual_seed(0)
    models = {
        "efficientnet_b0 224": mindlens.Classifier(efficientnet_b0(), (224, 224), 3),
        "convnext-style 16": mn.build("convnext", dtype=torch.float32),
        "mobilenetv3-style 32": mn.build("mobilenetv3", dtype=torch.float32),
    }
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.reps}, "
          f"load average at start {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"{'model':22} {'B':>3} {'case':26} {'ms/img':>9} {'x fwd+bwd':>9}")
    for name, clf in models.items():
        for batch in map(int, args.batches.split(",")):
            x = torch.randn(batch, 3, *clf.input_size)

            def forward(x=x, clf=clf):
                with torch.no_grad():
                    clf(x)

            def forward_backward(x=x, clf=clf):
                xg = x.clone().requires_grad_(True)
                out = clf(xg)
                torch.autograd.grad(out.max(1).values.sum(), xg)

            def lrp(x=x, clf=clf):
                mindlens.explain(clf, x, "lrp")

            cases = {"forward": forward, "forward+backward to input": forward_backward,
                     "lrp (epsilon_plus_flat)": lrp}
            for fn in cases.values():
                fn()  # warm-up (the LRP plan is traced and cached here)
            times: dict[str, list[float]] = {k: [] for k in cases}
            for _ in range(args.reps):
                for label, fn in cases.items():
                    t = time.perf_counter()
                    fn()
                    times[label].append(time.perf_counter() - t)
            med = {k: statistics.median(v) * 1000 / batch for k, v in times.items()}
            fb = med["forward+backward to input"]
            for label, ms in med.items():
                print(f"{name:22} {batch:>3} {label:26} {ms:9.2f} {ms / fb:9.2f}")


if __name__ == "__main__":
    main()
