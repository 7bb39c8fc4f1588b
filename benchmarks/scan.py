#!/usr/bin/env python3
"""Issue #17, "Must show": what the scan pipeline costs over the bare method, Ray against
local, and the audit on 10,000 maps.

    PYTHONPATH=src:. MINDLENS_ASSETS=/work/shared/assets python benchmarks/scan.py \
        [--images 200] [--rounds 3] [--methods gradcam,lrp] [--ray-images 64] \
        [--maps 10000] [--only throughput|ray|audit] [--json OUT]

1. ``throughput``: mobilenet_v2, ``--images`` 224 px JPEGs on disk (the coral images,
   randomly cropped and resized so every file differs), gradcam and lrp, batch 16, one
   torch thread: ``scan --engine local`` (decode in 4 loader threads, Zarr + Parquet, the
   journal's fsync per batch) against the bare method on the same images pre-loaded as
   tensors. Cases are measured in turns (bare, scan, bare, scan, ...); medians reported.
2. ``ray``: the same scan (gradcam, ``--ray-images``) with 2 Ray actors (1 thread each)
   against local (1 thread); Ray's start-up is timed apart.
3. ``audit``: SpRAy + location + t-SNE of one class of ``--maps`` synthetic 64x64 maps
   (three planted strategies), in a child process: seconds and peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

CORAL = Path(os.environ.get("MINDLENS_ASSETS", "/work/shared/assets")) / "images" / "coral"


def model():
    from tests.conftest import load_asset

    return load_asset("mobilenet_v2")


def write_jpegs(folder: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    sources = [Image.open(p).convert("RGB") for p in sorted(CORAL.glob("*.png"))]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        im = sources[i % len(sources)]
        w, h = im.size
        s = rng.uniform(0.7, 1.0)
        cw, ch = int(w * s), int(h * s)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        p = folder / f"{i:05d}.jpg"
        im.crop((x, y, x + cw, y + ch)).resize((224, 224)).save(p, quality=90)
        paths.append(p)
    return paths


def bare(clf, method: str, x: torch.Tensor, batch: int) -> float:
    from mindlens import methods
    from mindlens.targets import Targets

    algo = methods.get(method)()
    start = time.perf_counter()
    for s in range(0, len(x), batch):
        algo.explain(clf, x[s:s + batch], Targets(None))
    return time.perf_counter() - start


def scanned(clf, method: str, data: Path, out: Path, batch: int, **kw) -> float:
    from mindlens import scan

    start = time.perf_counter()
    scan(clf, data, [method], out, batch_size=batch, overwrite=True, **kw)
    return time.perf_counter() - start


def throughput(n: int, rounds: int, methods: list[str], batch: int = 16) -> dict:
    torch.set_num_threads(1)
    clf = model()
    tmp = Path(tempfile.mkdtemp())
    paths = write_jpegs(tmp / "images", n)
    x = clf.preprocess(paths)
    out = {}
    for method in methods:
        bare(clf, method, x[:batch], batch)  # warm-up
        b, s = [], []
        for _ in range(rounds):
            b.append(bare(clf, method, x, batch))
            s.append(scanned(clf, method, tmp / "images", tmp / "store", batch))
        mb, ms = statistics.median(b), statistics.median(s)
        out[method] = {"images": n, "bare_images_per_s": n / mb,
                       "scan_images_per_s": n / ms, "scan_over_bare": mb / ms,
                       "bare_s": b, "scan_s": s}
        print(f"{method}: bare {n / mb:.1f} images/s, scan {n / ms:.1f} images/s "
              f"(scan/bare {mb / ms:.2f}x); rounds bare {[round(v, 1) for v in b]}, scan "
              f"{[round(v, 1) for v in s]}", flush=True)
    return out


def ray_vs_local(n: int, batch: int = 8) -> dict:
    import ray

    torch.set_num_threads(1)
    clf = model()
    tmp = Path(tempfile.mkdtemp())
    write_jpegs(tmp / "images", n, seed=1)
    local = scanned(clf, "gradcam", tmp / "images", tmp / "local", batch)
    t = time.perf_counter()
    paths = os.pathsep.join([str(CORAL.parents[1]), str(ROOT / "src"), str(ROOT)])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": paths}})  # the asset model's code
    start_up = time.perf_counter() - t
    remote = scanned(clf, "gradcam", tmp / "images", tmp / "ray", batch, engine="ray",
                     workers=2)
    ray.shutdown()
    res = {"images": n, "local_s": local, "ray_2_workers_s": remote, "ray_init_s": start_up,
           "local_images_per_s": n / local, "ray_images_per_s": n / remote}
    print(f"ray: local {n / local:.1f} images/s, 2 actors {n / remote:.1f} images/s "
          f"(includes actor start and model shipping; ray.init {start_up:.1f} s)", flush=True)
    return res


def audit_child(n: int) -> None:
    from mindlens.spray import audit_class

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    kind = rng.integers(0, 3, n)
    cy = np.where(kind == 0, 6, rng.uniform(16, 48, n))
    cx = np.where(kind == 0, 6, np.where(kind == 1, rng.uniform(16, 32, n),
                                         rng.uniform(32, 48, n)))
    maps = np.exp(-((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2) / 50)
    maps = (maps + rng.normal(0, 0.05, maps.shape)).astype(np.float16).astype(np.float32)
    rows = [{"id": f"{i}", "path": f"/none/{i}.png", "label": None, "predicted_name": "c",
             "top_probs": [0.9]} for i in range(n)]
    start = time.perf_counter()
    res = audit_class("c", rows, maps, "gradcam")
    secs = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"maps": n, "seconds": secs, "peak_rss_mb": peak, "k": res["k"],
                      "sizes": [c["size"] for c in res["clusters"]]}))


def audit_bench(n: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--audit-child", str(n)],
                          capture_output=True, text=True, check=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"audit: {n} maps in {res['seconds']:.1f} s, peak RSS {res['peak_rss_mb']:.0f} MB "
          f"(whole process, imports included), k* = {res['k']}", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ray-images", type=int, default=64)
    ap.add_argument("--maps", type=int, default=10000)
    ap.add_argument("--only", choices=["throughput", "ray", "audit"])
    ap.add_argument("--methods", default="gradcam,lrp", help="for the throughput")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--audit-child", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.audit_child:
        audit_child(a.audit_child)
        return
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    out = {}
    if a.only in (None, "audit"):
        out["audit"] = audit_bench(a.maps)
    if a.only in (None, "throughput"):
        out["throughput"] = throughput(a.images, a.rounds, a.methods.split(","))
    if a.only in (None, "ray"):
        out["ray"] = ray_vs_local(a.ray_images)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
