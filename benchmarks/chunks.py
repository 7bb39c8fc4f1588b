#!/usr/bin/env python3
"""Peak memory of ``mindlens.explain`` on many images: chunked (``max_batch``) vs one piece.

    python benchmarks/chunks.py [--images 256] [--size 224] [--method saliency]

Each case runs in a fresh process (its peak resident memory, ``ru_maxrss``, includes
torch itself; a baseline process that only builds the model is measured too). Cases: one
chunk alone (the default ``max_batch`` images), all images with the default chunking, and
all images in fewer, larger chunks, so the table shows memory following the chunk, not
the batch. The model is a small 224-px CNN with random weights (memory does not depend
on the weights). On a shared host timings are noisy; memory is not.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

CHILD = """
import resource, sys, time
import torch
from torch import nn
import mindlens
from mindlens.methods.chunks import default_max_batch
torch.set_num_threads(2)
n, size, method, max_batch = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1),
                    nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                    nn.Flatten(), nn.Linear(64, 10)).eval()
clf = mindlens.Classifier(net, input_size=(size, size))
x = torch.rand(max(n, 1), 3, size, size)
chunk = default_max_batch(x)
if n == 0:
    print(0, chunk, 0.0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    sys.exit()
if max_batch == "chunk":
    x = x[:chunk]
kw = {} if max_batch in ("default", "chunk") else {"max_batch": int(max_batch)}
t = time.perf_counter()
e = mindlens.explain(clf, x, method, **kw)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(len(x), chunk, time.perf_counter() - t, peak)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--method", default="saliency")
    args = ap.parse_args()
    src = str(Path(__file__).resolve().parents[1] / "src")
    cases = [("baseline (model only)", 0, "default"), ("one chunk alone", args.images, "chunk"),
             (f"{args.images} images, default chunks", args.images, "default"),
             (f"{args.images} images, chunks of 64", args.images, "64")]
    print("| case | images | default chunk | seconds | peak RSS (MB) |\n|---|---|---|---|---|")
    for name, n, mb in cases:
        out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(args.size), args.method,
                              mb], capture_output=True, text=True, env={"PYTHONPATH": src},
                             check=True).stdout.split()
        print(f"| {name} | {out[0]} | {out[1]} | {float(out[2]):.1f} | {out[3]} |")


if __name__ == "__main__":
    main()
