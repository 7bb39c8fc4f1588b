"""Time ``POST /api/explain`` of ``mindlens serve`` over loopback HTTP against the same
explanation in-process (:func:`mindlens.cases.run`), for gradcam, saliency and lrp on
mobilenet_v2; then a bounded load test: N clients posting for S seconds.

    MINDLENS_ASSETS=../shared/assets PYTHONPATH=src python benchmarks/web.py \\
        [--reps 20] [--clients 20] [--load-s 60]

The server (uvicorn, a real socket) runs in this process with the results cache off, so
every request computes. The cases take turns within each repetition: decode the upload,
``cases.run``, encode the answer (each timed alone, one after the other), then the same
over HTTP.

- Overhead = HTTP p50 - ``cases.run`` p50: HTTP, multipart, decoding the upload, drawing
  the pictures, PNG and base64 encoding of the answer.
- HTTP + encoding overhead = HTTP p50 - p50 of (decode + ``cases.run``), against the
  in-process call from the same file's bytes (``mindlens.explain(model, "photo.png")``
  decodes too): all of the above but the decoding.
- CPU overhead: the first difference in CPU time of this process (all threads), the work
  the HTTP answer costs on whatever core it runs (what a fully loaded server pays). The
  server draws the photo on another core while the model runs (with 1 torch thread per
  worker a core is free), so decoding + encoding alone, one after the other, can exceed
  the wall-clock overhead. On a machine shared with other jobs the wall clock mostly
  measures them.

Peak memory is this process's max RSS (server and clients together). Not a test.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
os.environ.setdefault("TQDM_DISABLE", "1")

METHODS = ("gradcam", "saliency", "lrp")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--load-s", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import httpx
    import uvicorn
    from tests.conftest import asset_images, load_asset

    from mindlens import cases
    from mindlens.verdict import DEFAULT_FRACTION
    from mindlens.web import create_app
    from mindlens.web.limits import decode_image
    from mindlens.web.service import encode

    clf = load_asset("mobilenet_v2")
    files = asset_images("coral/*.png")[:4]
    blobs = [f.read_bytes() for f in files]
    app = create_app({"mobilenet_v2": clf}, cache_size=0, workers=args.workers,
                     queue=args.clients + 8)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/api/explain"

    def post(client: httpx.Client, blob: bytes, method: str) -> httpx.Response:
        return client.post(url, data={"method": method},
                           files={"image": ("x.png", blob, "image/png")}, timeout=300)

    from PIL import Image

    pixels = [np.asarray(Image.open(f).convert("RGB")) for f in files]  # uint8, in memory
    inproc: dict[str, list[float]] = {m: [] for m in METHODS}
    decoding: dict[str, list[float]] = {m: [] for m in METHODS}
    encoding: dict[str, list[float]] = {m: [] for m in METHODS}
    http: dict[str, list[float]] = {m: [] for m in METHODS}
    # CPU seconds of this process (server, clients and all threads): the overhead an idle
    # machine would see, far less disturbed by other jobs than the wall clock
    cpu_run: dict[str, list[float]] = {m: [] for m in METHODS}
    cpu_http: dict[str, list[float]] = {m: [] for m in METHODS}
    load = [os.getloadavg()[0]]
    with httpx.Client() as client:
        for m in METHODS:  # warm-up
            encode(cases.run(clf, [decode_image(blobs[0])], cases.Request(methods=[m]))[0],
                   DEFAULT_FRACTION)
            post(client, blobs[0], m).raise_for_status()
        for rep in range(args.reps):
            i = rep % len(blobs)
            for m in METHODS:
                t0 = time.perf_counter()
                decode_image(blobs[i])  # the upload, as the server decodes it
                t1, c1 = time.perf_counter(), time.process_time()
                case = cases.run(clf, [pixels[i]], cases.Request(methods=[m]))[0]
                t2, c2 = time.perf_counter(), time.process_time()
                cpu_run[m].append((c2 - c1) * 1e3)
                encode(case, DEFAULT_FRACTION)
                t3 = time.perf_counter()
                decoding[m].append((t1 - t0) * 1e3)
                inproc[m].append((t2 - t1) * 1e3)
                encoding[m].append((t3 - t2) * 1e3)
                t, c = time.perf_counter(), time.process_time()
                post(client, blobs[i], m).raise_for_status()
                http[m].append((time.perf_counter() - t) * 1e3)
                cpu_http[m].append((time.process_time() - c) * 1e3)
    load.append(os.getloadavg()[0])
    print(f"mobilenet_v2, {args.reps} reps, torch threads {args.threads}, load average "
          f"{load[0]:.1f} -> {load[1]:.1f} on {os.cpu_count()} CPUs")
    print("| method | cases.run p50 / p95 ms | POST /api/explain p50 / p95 ms | overhead at "
          "p50 ms | HTTP + encoding overhead at p50 ms (over decode + cases.run) | "
          "CPU overhead p50 ms | decode + encode alone, serial, p50 ms |")
    print("|---|---|---|---|---|---|---|")
    for m in METHODS:
        a, b = inproc[m], http[m]
        dec, enc = statistics.median(decoding[m]), statistics.median(encoding[m])
        over = statistics.median(b) - statistics.median(a)
        from_bytes = statistics.median(b) - statistics.median(
            [d + r for d, r in zip(decoding[m], inproc[m], strict=True)])
        cpu = statistics.median(cpu_http[m]) - statistics.median(cpu_run[m])
        print(f"| {m} | {pct(a, 50):.0f} / {pct(a, 95):.0f} | {pct(b, 50):.0f} / "
              f"{pct(b, 95):.0f} | {over:+.0f} | {from_bytes:+.0f} | {cpu:+.0f} | "
              f"{dec + enc:.1f} ({dec:.1f} + {enc:.1f}) |")
    if args.load_s <= 0:
        server.should_exit = True
        return
    counts = {"ok": 0, "busy": 0, "error": 0}
    lat: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + args.load_s

    def client_loop(k: int) -> None:
        with httpx.Client() as c:
            n = 0
            while time.monotonic() < stop:
                t = time.perf_counter()
                try:
                    r = post(c, blobs[(k + n) % len(blobs)], "gradcam")
                    kind = "ok" if r.status_code == 200 else (
                        "busy" if r.status_code == 503 else "error")
                except httpx.HTTPError:
                    kind = "error"
                with lock:
                    counts[kind] += 1
                    if kind == "ok":
                        lat.append((time.perf_counter() - t) * 1e3)
                if kind == "busy":
                    time.sleep(0.5)
                n += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(args.clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.monotonic() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nload: {args.clients} clients, {wall:.0f} s, gradcam, {args.workers} workers: "
          f"{counts['ok']} answered ({counts['ok'] / wall:.1f}/s), {counts['busy']} x 503, "
          f"{counts['error']} errors; latency p50 {pct(lat, 50):.0f} ms, p95 "
          f"{pct(lat, 95):.0f} ms; peak RSS {peak:.0f} MiB; load average "
          f"{os.getloadavg()[0]:.1f}")
    server.should_exit = True


if __name__ == "__main__":
    main()
