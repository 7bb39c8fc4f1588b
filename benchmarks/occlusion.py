#!/usr/bin/env python3
"""Occlusion speed: mindlens (default, exact, incremental, approximate) against Captum.

On mobilenet_v2 at 224x224 (window 16, stride 8, baseline 0 in model space: 27 x 27 = 729
window positions), times per image:

- mindlens ``occlusion`` in its default mode (``"auto"``: the exact map through the
  incremental engine, checked on 3 windows against the whole model), ``mode="exact"``
  (every window through the whole model, batched, inference mode), ``"incremental"``
  (Krypton-style, same map, unchecked) and ``"approximate"`` (Krypton's adaptive
  drill-down in bfloat16, and in float32; its error against the exact map is measured
  and printed, next to the error the mode measures itself);
- Captum ``Occlusion`` with ``perturbations_per_eval`` 1 and 16 (same windows, same
  baseline, softmax probability as the score);
- Captum ``FeatureAblation`` (ppe 1 and 16) and mindlens ``area_occlusion`` on the same
  SLIC label map (about 48 superpixels).

Every case runs ``--repeat`` times, the cases taking turns (so that a slow phase of the
machine hits all of them alike), and the median is reported. Peer runs that exceed
``--cap`` seconds are stopped from a forward pre-hook and the full time is extrapolated
from the per-sample time and the known number of model evaluations, as
``../shared/bench/peers.py`` does (marked ``*``); mindlens cases always run to the end.
``--only REGEX`` runs the cases whose name matches (the Captum Occlusion cases always
run: they are the reference). Benchmarks are not tests: nothing here asserts a time.

    PYTHONPATH=src MINDLENS_ASSETS=../shared/assets python benchmarks/occlusion.py --cap 30
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("TQDM_DISABLE", "1")


class Capped(Exception):
    pass


class Meter:
    """Counts model evaluations (samples) and stops the run after ``cap`` seconds."""

    def __init__(self, module: torch.nn.Module, cap: float) -> None:
        self.module, self.cap = module, cap
        self.samples = 0
        self.start = 0.0
        self.capping = True

    def hook(self, _module: Any, inputs: tuple[Any, ...]) -> None:
        if self.capping and time.perf_counter() - self.start > self.cap:
            raise Capped
        self.samples += int(inputs[0].shape[0])

    def run(self, fn: Callable[[], Any], total: int, capping: bool = True
            ) -> tuple[float, bool, Any]:
        """Seconds for the whole job (extrapolated if capped), capped?, result."""
        from mindlens.allocator import give_back

        handle = self.module.register_forward_pre_hook(self.hook)
        self.capping = capping
        self.samples = 0
        self.start = time.perf_counter()
        try:
            result = fn()
            return time.perf_counter() - self.start, False, result
        except Capped:
            elapsed = time.perf_counter() - self.start
            return elapsed * total / max(self.samples, 1), True, None
        finally:
            handle.remove()
            give_back()  # no case runs on the memory mindlens keeps after a call


def load(assets: Path):
    sys.path.insert(0, str(assets))
    import zoo  # type: ignore[import-not-found]

    import mindlens

    module, card = zoo.load("mobilenet_v2")
    clf = mindlens.Classifier(module, card["input_size"], card["channels"], card["mean"],
                              card["std"], card["labels"], card["offset"], name="mobilenet_v2")
    return clf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cap", type=float, default=30.0, help="seconds per case before "
                    "extrapolating")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (2, as in "
                    "../shared/bench/peers-baseline.md)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case (median reported)")
    ap.add_argument("--assets", default=os.environ.get("MINDLENS_ASSETS", "../shared/assets"))
    ap.add_argument("--skip-captum", action="store_true")
    ap.add_argument("--only", default=None, help="regex: run only the matching cases "
                    "(and Captum Occlusion), e.g. 'default|exact'")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from mindlens.methods.perturbation.area_occlusion import AreaOcclusion, segment
    from mindlens.methods.perturbation.occlusion import Occlusion
    from mindlens.targets import Targets

    assets = Path(args.assets)
    clf = load(assets)
    module = clf.module.eval()
    image = assets / "images" / "coral" / "cat.png"
    if not image.exists():
        image = sorted((assets / "images" / "foolbox").glob("imagenet_*.jpg"))[0]
    x = clf.preprocess(image)
    with torch.inference_mode():
        target = int(clf(x).argmax(1))
        fwd_times = []
        for _ in range(5):
            t = time.perf_counter()
            module(x)
            fwd_times.append(time.perf_counter() - t)
    fwd = statistics.median(fwd_times)
    n_windows = 27 * 27
    meter = Meter(module, args.cap)
    rows: list[dict[str, Any]] = []

    cases: list[tuple[str, Callable[[], Any], int]] = []

    def case(name: str, fn: Callable[[], Any], total: int) -> None:
        if args.only is None or re.search(args.only, name) or "Occlusion ppe" in name:
            cases.append((name, fn, total))

    occ = {"window": 16, "stride": 8, "baseline": "zero", "border": "truncate"}
    tgt = Targets(target)
    print(f"mobilenet_v2 224x224, {torch.get_num_threads()} threads; one forward "
          f"{fwd * 1000:.1f} ms; {n_windows} windows; load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    case("mindlens occlusion default (auto)", lambda: Occlusion(**occ).explain(clf, x, tgt),
         n_windows + 1)
    case("mindlens occlusion exact", lambda: Occlusion(mode="exact", **occ).explain(
        clf, x, tgt), n_windows + 1)
    case("mindlens occlusion incremental",
         lambda: Occlusion(mode="incremental", **occ).explain(clf, x, tgt), n_windows + 1)
    approx_names = {"mindlens occlusion approximate": "auto",
                    "mindlens occlusion approximate float32": "float32"}
    for name, precision in approx_names.items():
        case(name, lambda precision=precision: Occlusion(
            mode="approximate", precision=precision, **occ).explain(clf, x, tgt),
            n_windows + 1)

    labels = segment(clf.spec.denormalize(x)[0].permute(1, 2, 0).clamp(0, 1).numpy(),
                     "slic", {"n_segments": 48})
    n_regions = len({int(v) for v in labels.flatten()} - {0})
    case("mindlens area_occlusion (SLIC)",
         lambda: AreaOcclusion(regions=labels).explain(clf, x, tgt), n_regions + 1)

    if not args.skip_captum:
        from captum.attr import FeatureAblation
        from captum.attr import Occlusion as CaptumOcclusion

        def probs(t: torch.Tensor) -> torch.Tensor:
            return module(t)[:, clf.logit_offset:].softmax(1)

        for ppe in (1, 16):
            case(f"captum Occlusion ppe={ppe}", lambda ppe=ppe: CaptumOcclusion(probs)
                 .attribute(x, sliding_window_shapes=(3, 16, 16), strides=(3, 8, 8),
                            baselines=0, target=target, perturbations_per_eval=ppe),
                 n_windows + 1)
        mask = torch.from_numpy(labels)[None, None].expand(1, 3, 224, 224)
        for ppe in (1, 16):
            case(f"captum FeatureAblation ppe={ppe} (SLIC)", lambda ppe=ppe: FeatureAblation(
                probs).attribute(x, baselines=0, target=target, feature_mask=mask,
                                 perturbations_per_eval=ppe), n_regions + 1)

    times: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    capped: dict[str, bool] = {}
    results: dict[str, Any] = {}
    for rep in range(args.repeat):
        for name, fn, total in cases:
            seconds, was_capped, result = meter.run(fn, total,
                                                    capping=not name.startswith("mindlens"))
            times[name].append(seconds)
            capped[name] = capped.get(name, False) or was_capped
            results.setdefault(name, result)
            print(f"  [{rep + 1}/{args.repeat}] {name}: {seconds * 1000:.0f} ms"
                  f"{' (extrapolated)' if was_capped else ''}", flush=True)
    for name, _, _ in cases:
        rows.append({"name": name, "ms": statistics.median(times[name]) * 1000,
                     "min_ms": min(times[name]) * 1000, "capped": capped[name]})
    exact = results.get("mindlens occlusion exact")
    inc = results.get("mindlens occlusion incremental")
    auto = results.get("mindlens occlusion default (auto)")
    approx = {name: results.get(name) for name in approx_names}

    by_name = {r["name"]: r["ms"] for r in rows}
    ref1 = by_name.get("captum Occlusion ppe=1")
    ref16 = by_name.get("captum Occlusion ppe=16")
    print()
    print(f"median of {args.repeat} runs (min in brackets)")
    print("| method | ms/image | x one forward | vs Captum Occlusion ppe=1 | vs ppe=16 |")
    print("|---|---|---|---|---|")
    for r in rows:
        star = "*" if r["capped"] else ""
        other_job = "area" in r["name"] or "FeatureAblation" in r["name"]
        v1 = f"{ref1 / r['ms']:.2f}x" if ref1 and not other_job else ""
        v16 = f"{ref16 / r['ms']:.2f}x" if ref16 and not other_job else ""
        print(f"| {r['name']} | {r['ms']:.0f}{star} ({r['min_ms']:.0f}) | "
              f"{r['ms'] / 1000 / fwd:.0f} | {v1} | {v16} |")
    fa = by_name.get("captum FeatureAblation ppe=1 (SLIC)")
    area = by_name.get("mindlens area_occlusion (SLIC)")
    if fa and area:
        print(f"\narea_occlusion vs FeatureAblation ppe=1 on the same {n_regions} regions: "
              f"{fa / area:.2f}x")
    if auto is not None:
        path = auto.extras["exact_path"]
        print(f"default: ran on the {path['engine']} path; its check on "
              f"{path.get('check_windows', 0)} windows: max |drop difference| "
              f"{path.get('max_abs_difference', float('nan')):.2e} (tolerance "
              f"{path.get('tolerance', float('nan')):.2e}); note: {path['note']}")
    if exact is not None:
        ref = exact.maps
        scale = float(ref.abs().max())
        for name, e in [("default", auto), ("incremental", inc), *approx.items()]:
            if e is None:
                continue
            err = float((e.maps - ref).abs().max()) / scale
            a, b = e.maps.flatten().double(), ref.flatten().double()
            a, b = a - a.mean(), b - b.mean()
            corr = float(a @ b / (a.norm() * b.norm()))
            check = e.extras.get("approximation")
            own = (f"; {check['precision']}, {check['run']} of {check['windows']} windows "
                   f"run; its own check on {check['check_windows']} windows: "
                   f"{check['relative_error']:.2e} of the max drop") if check else ""
            print(f"{name}: max |map - exact| / max |exact| = {err:.2e}; Pearson r = "
                  f"{corr:.4f}{own}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print("\n* extrapolated from a capped run (time per model evaluation x evaluations)")


if __name__ == "__main__":
    main()
