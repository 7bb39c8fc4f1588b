#!/usr/bin/env python3
"""CAM variants and Score-CAM: mindlens against pytorch-grad-cam 1.5.7, side by side.

On mobilenet_v2 at 224x224 (layer ``features``: 7x7, 1280 channels), one photo from the
test assets (``grace_hopper.png``), its top-1 class, times per image:

- ``scorecam``: mindlens at its defaults (pytorch-grad-cam's map: align_corners=True masks,
  logits, softmax over channels), batches of ``--batch-size`` (default: the method's own,
  8 at 224 px), no autograd, channels-last;
  the preview ``top_channels=N`` (``--top``), its error against the exact map measured
  here and the error it reports itself; pytorch-grad-cam ``ScoreCAM`` (its default batch
  of 16);
- with ``--all``: the gradient variants (``gradcam_pp``, ``xgradcam``, ``layercam``,
  ``hirescam``), ``eigencam`` and ``ablationcam`` against their pytorch-grad-cam classes;
- one forward pass and one forward+backward pass as units (with freed memory kept for
  reuse, as mindlens's methods run: :mod:`mindlens.allocator`).

Cases take turns (round-robin, ``--repeat`` rounds) so that a slow phase of the shared
machine hits all of them alike; medians are reported. pytorch-grad-cam's maps are compared
with mindlens's before its min-max and cv2 resize (its ``scale_cam_image`` replaced by the
identity, as in the tests), as the largest difference relative to the map's maximum.
Benchmarks are not tests: nothing here asserts a time.

    PYTHONPATH=src MINDLENS_ASSETS=../shared/assets python benchmarks/cams.py --all
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import _torchvision_stub, load

import mindlens
from mindlens.allocator import give_back, reusing_memory

PGC = {"gradcam_pp": ("GradCAMPlusPlus", {"eps_additive": 1e-6}),
       "xgradcam": ("XGradCAM", {"eps_additive": 1e-7, "relu": True}),
       "layercam": ("LayerCAM", {}), "hirescam": ("HiResCAM", {"relu": True}),
       "eigencam": ("EigenCAM", {"relu": True}), "ablationcam": ("AblationCAM", {})}


def photo(clf: mindlens.Classifier) -> torch.Tensor:
    root = Path(os.environ.get("MINDLENS_ASSETS", Path(__file__).parents[2] / "shared" /
                               "assets"))
    return clf.preprocess(str(root / "images" / "coral" / "grace_hopper.png"))


def pgc_call(cls_name: str, model: torch.nn.Module, layer: str, x: torch.Tensor,
             target: int, **init: Any) -> Callable[[], Any]:
    _torchvision_stub()
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    batch = init.pop("batch_size", None) if cls_name == "ScoreCAM" else None

    def run() -> Any:  # its hooks stay while the object lives: one object per call
        with getattr(pytorch_grad_cam, cls_name)(model=model, target_layers=[
                model.get_submodule(layer)], **init) as cam:
            if batch is not None:
                cam.batch_size = batch
            out = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])
        model.zero_grad(set_to_none=True)
        return out
    return run


def pgc_native(cls_name: str, model: torch.nn.Module, layer: str, x: torch.Tensor,
               target: int, **init: Any) -> torch.Tensor:
    """pytorch-grad-cam's ReLU'd map at layer resolution (scale_cam_image = identity)."""
    import pytorch_grad_cam.base_cam as base_cam
    keep = base_cam.scale_cam_image
    base_cam.scale_cam_image = lambda cam, target_size=None: cam
    try:
        return torch.from_numpy(pgc_call(cls_name, model, layer, x, target, **init)()).float()
    finally:
        base_cam.scale_cam_image = keep


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="masked inputs per pass (default: the method's own choice)")
    ap.add_argument("--top", type=int, default=256, help="preview: channels scored")
    ap.add_argument("--peer-reusing", action="store_true",
                    help="also pytorch-grad-cam's ScoreCAM with freed memory kept for reuse "
                         "(mindlens.allocator): how much of the lead is the allocator's")
    ap.add_argument("--all", action="store_true", help="also the gradient variants, Eigen-CAM")
    ap.add_argument("--ablation", action="store_true",
                    help="also Ablation-CAM (pytorch-grad-cam runs 1280 whole forwards)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clf = load("mobilenet_v2")
    layer = "features"
    x = photo(clf)
    with torch.no_grad():
        cls = int(clf(x).argmax())
    peer_target = cls + clf.logit_offset
    model = copy.deepcopy(clf.module).eval()
    explain = lambda m, **kw: (lambda: mindlens.explain(clf, x, m, target=cls,  # noqa: E731
                                                        layer=layer, **kw))
    cases: dict[str, Callable[[], Any]] = {}

    def fwd() -> Any:  # the units with freed memory reused, as mindlens runs
        with torch.no_grad(), reusing_memory():
            return model(x)

    def fwdbwd() -> Any:
        xg = x.detach().requires_grad_(True)
        with reusing_memory():
            return torch.autograd.grad(model(xg)[0, peer_target], xg)[0]

    cases["forward"], cases["forward+backward"] = fwd, fwdbwd
    cases["mindlens scorecam"] = explain("scorecam", batch_size=args.batch_size)
    cases[f"mindlens scorecam top_channels={args.top}"] = explain(
        "scorecam", batch_size=args.batch_size, top_channels=args.top)
    cases["grad-cam ScoreCAM (batch 16)"] = pgc_call("ScoreCAM", model, layer, x, peer_target,
                                                     batch_size=16)
    if args.peer_reusing:
        plain = cases["grad-cam ScoreCAM (batch 16)"]

        def reusing() -> Any:
            with reusing_memory():
                return plain()
        cases["grad-cam ScoreCAM (batch 16, memory reused)"] = reusing
    chosen = {m: v for m, v in PGC.items()
              if (m == "ablationcam" and args.ablation) or (m != "ablationcam" and args.all)}
    for m, (peer, kw) in chosen.items():
        cases[f"mindlens {m}"] = explain(m, **kw)
        init = {"batch_size": 32, "ratio_channels_to_ablate": 1.0} \
            if peer == "AblationCAM" else {}
        cases[f"grad-cam {peer}"] = pgc_call(peer, model, layer, x, peer_target, **init)
    times: dict[str, list[float]] = {k: [] for k in cases}
    last: dict[str, Any] = {}
    for key, run in cases.items():  # warm-up (a call of 1280 forwards warms itself up)
        if "score" not in key.lower() and "ablation" not in key.lower():
            run()
    for _ in range(args.repeat):
        for key, run in cases.items():
            t0 = time.perf_counter()
            last[key] = run()
            times[key].append(time.perf_counter() - t0)
            give_back()  # no case runs on the memory mindlens keeps after its calls
            print(f"  {key}: {times[key][-1]:.2f} s", file=sys.stderr, flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    fw = med["forward"]
    print(f"mobilenet_v2 224x224, 1 image, layer {layer!r}, {args.repeat} rounds, "
          f"{args.threads} threads; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores (shared machine: medians, noisy)\n")
    print("| case | median s | min s | x forward |")
    print("|---|---|---|---|")
    for k, v in times.items():
        print(f"| {k} | {med[k]:.3f} | {min(v):.3f} | {med[k] / fw:.0f} |")
    exact = last["mindlens scorecam"]
    # pytorch-grad-cam's full output: ReLU, min-max, cv2 bilinear resize, min-max; the same
    # steps on mindlens's map (torch bilinear instead of cv2: differences of ~1e-3 remain)
    theirs = torch.from_numpy(last["grad-cam ScoreCAM (batch 16)"]).float()
    ours_pp = exact.maps[:, 0].clamp_min(0)
    ours_pp = ours_pp - ours_pp.amin(dim=(1, 2), keepdim=True)
    ours_pp = ours_pp / (1e-7 + ours_pp.amax(dim=(1, 2), keepdim=True))
    peer = "grad-cam ScoreCAM (batch 16)"
    print(f"\nscorecam: {med[peer] / med['mindlens scorecam']:.2f}x faster than "
          f"pytorch-grad-cam (medians; fastest calls: "
          f"{min(times[peer]) / min(times['mindlens scorecam']):.2f}x); "
          f"{exact.cost.forward} forwards ({exact.extras['constant_channels'][0]} constant "
          f"channels scored once on the zero image); max |difference| to pytorch-grad-cam "
          f"= {rel_err(ours_pp, theirs):.2e} of the map's max after pytorch-grad-cam's "
          f"post-processing (torch vs cv2 resize)")
    if args.peer_reusing:
        k = "grad-cam ScoreCAM (batch 16, memory reused)"
        print(f"with freed memory reused (mindlens.allocator) pytorch-grad-cam takes "
              f"{med[k]:.1f} s: mindlens is {med[k] / med['mindlens scorecam']:.2f}x faster "
              f"than that")
    prev = last[f"mindlens scorecam top_channels={args.top}"]
    a, b = prev.maps.flatten(), exact.maps.flatten()
    r = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    key = f"mindlens scorecam top_channels={args.top}"
    print(f"preview top_channels={args.top}: {med[peer] / med[key]:.2f}x faster than "
          f"pytorch-grad-cam, {med['mindlens scorecam'] / med[key]:.2f}x faster than exact; "
          f"max |preview - exact| = {rel_err(prev.maps, exact.maps):.3f} of the exact map's "
          f"max, Pearson r = {r:.4f}; it reports: {prev.extras['preview']}")
    for m, (peer_name, kw) in chosen.items():
        ours = mindlens.explain(clf, x, m, target=cls, layer=layer, **kw).maps[:, 0]
        init = {"batch_size": 32, "ratio_channels_to_ablate": 1.0} \
            if peer_name == "AblationCAM" else {}
        th = pgc_native(peer_name, model, layer, x, peer_target, **init)
        th = F.interpolate(th[:, None], size=tuple(x.shape[2:]), mode="bilinear",
                           align_corners=False)[:, 0]
        err = f"{rel_err(ours, th):.2e}" + (" (the solver's sign may differ)"
                                            if m == "eigencam" else "")
        ratio = med[f"grad-cam {peer_name}"] / med[f"mindlens {m}"]
        print(f"{m}: {ratio:.2f}x faster than pytorch-grad-cam {peer_name}; "
              f"{med[f'mindlens {m}'] / fw:.1f} x forward; max |difference| = {err}")


if __name__ == "__main__":
    main()
