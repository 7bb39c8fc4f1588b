#!/usr/bin/env python3
"""Time mindlens methods against Captum and pytorch-grad-cam on the same models, in one run.

    python benchmarks/run.py [--models mobilenet_v2,cifar10_resnet20,resnet50]
                             [--batch 1,16] [--cases REGEX] [--quick] [--json OUT.json]

Models: ``mobilenet_v2`` and ``cifar10_resnet20`` from the shared test assets
(``$MINDLENS_ASSETS``, default ``../shared/assets``) and ``resnet50``, a ResNet-50-like network
defined here (random weights; timings do not depend on the weights). Every (model, case)
runs in its own subprocess (glibc told to keep freed memory, two threads), with a warm-up
call and the median of several timed calls; a matmul probe before and after each case
flags slow phases of the shared host. The table gives ms per image, the ratio to one
forward+backward to the input and to one forward, and each mindlens row's ratio to the
peer rows that compute the same thing.

Cases live in a registry (:data:`CASES`): a later method family adds rows with
``@case("mindlens", "lrp", peers=(...))``-style entries, nothing else changes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TAG = "MINDLENS_BENCH "
ASSETS = Path(os.environ.get("MINDLENS_ASSETS", ROOT.parent / "shared" / "assets"))
if not (ASSETS / "zoo.py").exists():  # a worktree one level deeper than main
    ASSETS = ROOT.parents[1] / "shared" / "assets"
MALLOC_RETAIN = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}
MODELS = ("mobilenet_v2", "cifar10_resnet20", "resnet50")
LAYERS = {"mobilenet_v2": "features", "cifar10_resnet20": "layer3", "resnet50": "layer4"}


# -- the registry of cases ---------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One timed row. ``build(ctx)`` returns a zero-argument callable that explains the whole
    batch once; ``peers`` names the rows that compute the same thing (for the ratio)."""

    group: str  # "reference", "mindlens", "captum", "grad-cam"
    name: str
    build: Callable[[dict[str, Any]], Callable[[], Any]]
    peers: tuple[str, ...] = ()
    applies: Callable[[str], bool] = field(default=lambda model: True)

    @property
    def key(self) -> str:
        return f"{self.group}/{self.name}"


CASES: dict[str, Case] = {}


def case(group: str, name: str, peers: tuple[str, ...] = (),
         applies: Callable[[str], bool] = lambda model: True):
    def deco(build: Callable[[dict[str, Any]], Callable[[], Any]]):
        c = Case(group, name, _reusing(build) if group == "reference" else build, peers,
                 applies)
        CASES[c.key] = c
        return build
    return deco


def _reusing(build: Callable[[dict[str, Any]], Callable[[], Any]]):
    """The reference passes run with freed memory kept for reuse, as mindlens's methods run
    (:mod:`mindlens.allocator`): the units are the machine's best, not glibc's defaults."""
    def built(ctx):
        from mindlens.allocator import reusing_memory
        run = build(ctx)

        def reusing():
            with reusing_memory():
                return run()
        return reusing
    return built


@case("reference", "forward")
def _forward(ctx):
    import torch
    model, x = ctx["model"], ctx["x"]

    def run():
        with torch.no_grad():
            return model(x)
    return run


@case("reference", "forward+backward")
def _fwdbwd(ctx):
    import torch
    model, x, t = ctx["model"], ctx["x"], ctx["peer_targets"]

    def run():
        xg = x.detach().requires_grad_(True)
        return torch.autograd.grad(model(xg).gather(1, t[:, None]).sum(), xg)[0]
    return run


def _mindlens(method: str):
    def build(ctx):
        import mindlens
        clf, x, t = ctx["clf"], ctx["x"], ctx["targets"]
        kw = {"layer": ctx["layer"]} if method not in INPUT_SPACE else {}
        return lambda: mindlens.explain(clf, x, method, target=t, **kw)
    return build


INPUT_SPACE = ("saliency", "guided_backprop", "deconvnet", "input_x_gradient", "lrp", "sglrp")
MINDLENS_PEERS = {
    "saliency": ("captum/Saliency",),
    "guided_backprop": ("captum/GuidedBackprop",),
    "deconvnet": (),
    "input_x_gradient": (),
    "lrp": (),
    "sglrp": (),
    "gradcam": ("captum/LayerGradCam", "grad-cam/GradCAM"),
    "guided_gradcam": ("captum/GuidedGradCam",),
    "cam": (),
    # the other single-pass CAMs (their peers are timed in benchmarks/cams.py --all)
    "gradcam_pp": (), "xgradcam": (), "layercam": (), "hirescam": (), "eigencam": (),
}
for _m, _p in MINDLENS_PEERS.items():
    case("mindlens", _m, _p)(_mindlens(_m))


def _captum(kind: str):
    def build(ctx):
        import captum.attr as ca
        model, x, t = ctx["model"], ctx["x"], ctx["peer_targets"]
        layer = model.get_submodule(ctx["layer"])
        if kind == "LayerGradCam":
            obj = ca.LayerGradCam(model, layer)

            def run():
                cam = obj.attribute(x, target=t, relu_attributions=True)
                return ca.LayerAttribution.interpolate(cam, tuple(x.shape[2:]),
                                                       interpolate_mode="bilinear")
            return run
        if kind == "GuidedGradCam":
            obj = ca.GuidedGradCam(model, layer)
            return lambda: obj.attribute(x, target=t, interpolate_mode="bilinear")
        obj = getattr(ca, kind)(model)
        return lambda: obj.attribute(x, target=t)
    return build


for _k in ("Saliency", "GuidedBackprop", "LayerGradCam", "GuidedGradCam"):
    case("captum", _k)(_captum(_k))


@case("grad-cam", "GradCAM")
def _gradcam_peer(ctx):
    _torchvision_stub()
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    model, x = ctx["model"], ctx["x"]
    layer = model.get_submodule(ctx["layer"])
    targets = [ClassifierOutputTarget(int(c)) for c in ctx["peer_targets"]]

    def run():  # its hooks stay on the model while the object lives: one object per call
        with GradCAM(model=model, target_layers=[layer]) as cam:
            out = cam(input_tensor=x, targets=targets)
        model.zero_grad(set_to_none=True)  # it leaves .grad on every parameter
        return out
    return run


# -- path, noise and mask attributions (issue 13): integrated gradients at 32 steps and
# SmoothGrad at 25 samples against Captum with the same steps, samples and batch; RISE
# against N forwards (N from $MINDLENS_BENCH_RISE_N, 4000 by default)
IG_STEPS, SG_SAMPLES = 32, 25
RISE_N = int(os.environ.get("MINDLENS_BENCH_RISE_N", "4000"))


def _rows_reference(rows: int, backward: bool):
    """``rows`` copies of each image in one channels-last batch: the passes that IG (rows =
    steps), SmoothGrad (rows = samples) and RISE (rows = masks per pass) run, without the
    method around them. ms/img counts the whole batch for one image, so the ratio of a
    method to this row divided by its number of batches is its overhead."""
    def build(ctx):
        import torch
        model, x, t = ctx["model"], ctx["x"], ctx["peer_targets"]
        big = x.repeat_interleave(rows, 0).contiguous(memory_format=torch.channels_last)
        tt = t.repeat_interleave(rows)
        if not backward:
            def fwd():
                with torch.inference_mode():
                    return model(big)
            return fwd

        def fwdbwd():
            xg = big.detach().requires_grad_(True)
            return torch.autograd.grad(model(xg).gather(1, tt[:, None]).sum(), xg)[0]
        return fwdbwd
    return build


case("reference", f"forward+backward x{IG_STEPS} rows")(_rows_reference(IG_STEPS, True))
case("reference", f"forward+backward x{SG_SAMPLES} rows")(_rows_reference(SG_SAMPLES, True))
case("reference", "forward x32 rows")(_rows_reference(32, False))


@case("mindlens", "integrated_gradients", peers=("captum/IntegratedGradients",))
def _ig(ctx):
    import mindlens
    clf, x, t = ctx["clf"], ctx["x"], ctx["targets"]
    return lambda: mindlens.explain(clf, x, "integrated_gradients", target=t, n_steps=IG_STEPS,
                                    internal_batch_size=IG_STEPS, delta_tolerance=1e9)


@case("captum", "IntegratedGradients")
def _ig_peer(ctx):
    import captum.attr as ca
    obj = ca.IntegratedGradients(ctx["model"])
    x, t = ctx["x"], ctx["peer_targets"]
    return lambda: obj.attribute(x, target=t, n_steps=IG_STEPS, internal_batch_size=IG_STEPS)


@case("mindlens", "smoothgrad", peers=("captum/NoiseTunnel",))
def _sg(ctx):
    import mindlens
    clf, x, t = ctx["clf"], ctx["x"], ctx["targets"]
    return lambda: mindlens.explain(clf, x, "smoothgrad", target=t, n=SG_SAMPLES,
                                    batch_size=SG_SAMPLES, noise_range="absolute", sigma=0.6)


@case("captum", "NoiseTunnel")
def _sg_peer(ctx):
    import captum.attr as ca
    obj = ca.NoiseTunnel(ca.Saliency(ctx["model"]))
    x, t = ctx["x"], ctx["peer_targets"]
    return lambda: obj.attribute(x, nt_samples=SG_SAMPLES, nt_samples_batch_size=SG_SAMPLES,
                                 stdevs=0.6, target=t, abs=False)


@case("mindlens", "rise")
def _rise(ctx):
    import mindlens
    clf, x, t = ctx["clf"], ctx["x"], ctx["targets"]
    return lambda: mindlens.explain(clf, x, "rise", target=t, n_masks=RISE_N)


# -- models -------------------------------------------------------------------------------
def resnet50_like():
    """Torchvision-style ResNet-50 (bottlenecks 3-4-6-3, BatchNorm, in-place ReLU modules,
    GAP + linear), written here because torchvision is not available."""
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, width: int, stride: int) -> None:
            super().__init__()
            cout = width * 4
            self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

        def forward(self, x):
            idt = x if self.down is None else self.down(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            return self.relu(self.bn3(self.conv3(out)) + idt)

    class ResNet50(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                      nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
            cin = 64
            for i, (width, n, stride) in enumerate(
                    [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], 1):
                blocks = []
                for b in range(n):
                    blocks.append(Bottleneck(cin, width, stride if b == 0 else 1))
                    cin = width * 4
                setattr(self, f"layer{i}", nn.Sequential(*blocks))
            self.fc = nn.Linear(2048, 1000)

        def forward(self, x):
            x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    torch.manual_seed(0)
    model = ResNet50()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, Bottleneck):
                m.bn3.weight.mul_(0.2)  # keep the residual stream bounded
    return model.eval()


def load(name: str):
    import torch

    import mindlens
    if name == "resnet50":
        module = resnet50_like()
        return mindlens.Classifier(module, (224, 224), 3, [0.485, 0.456, 0.406],
                                   [0.229, 0.224, 0.225], name=name)
    sys.path.insert(0, str(ASSETS))
    import zoo  # type: ignore[import-not-found]
    module, card = zoo.load(name)
    del torch
    return mindlens.Classifier(module, card["input_size"], card["channels"], card["mean"],
                               card["std"], card["labels"], card["offset"], name=name)


def _torchvision_stub() -> None:
    """pytorch-grad-cam imports torchvision at import time; it does not work here, so a
    stand-in goes first on sys.path (a broken installed torchvision is never imported)."""
    if "torchvision" in sys.modules:
        return
    root = Path(tempfile.mkdtemp(prefix="mlbench-tv-"))
    files = {
        "__init__.py": "from . import models, transforms, ops\n",
        "models/__init__.py": "from . import resnet\n",
        "models/resnet.py": "class BasicBlock: pass\nclass Bottleneck: pass\n",
        "transforms/__init__.py": "from . import functional\n"
                                  "Compose = Normalize = ToTensor = Resize = None\n",
        "transforms/functional.py": "resize = None\n",
        "ops/__init__.py": "box_iou = None\n",
    }
    for rel, text in files.items():
        p = root / "torchvision" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    sys.path.insert(0, str(root))


# -- one subprocess: one model, one case, every batch size -----------------------------------
def probe_ms() -> float:
    import torch
    a = torch.ones(512, 512)
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        a @ a
        ts.append(time.perf_counter() - t0)
    return 1000 * statistics.median(ts)


def _context(clf, model_name: str, batch: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F
    gen = torch.Generator().manual_seed(0)
    px = F.interpolate(torch.rand(batch, clf.channels, 8, 8, generator=gen),
                       size=clf.input_size, mode="bilinear", align_corners=False)
    n_cls = len(clf.labels) if clf.labels is not None else 1000
    targets = torch.tensor([(17 + 101 * i) % n_cls for i in range(batch)])
    return {"clf": clf, "model": clf.module, "x": clf.spec.normalize(px),
            "targets": targets.tolist(), "peer_targets": targets + clf.logit_offset,
            "layer": LAYERS[model_name]}


def _timed(run: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def _row(model: str, key: str, batch: int, times: list[float]) -> dict[str, Any]:
    return {"model": model, "case": key, "batch": batch,
            "ms": 1000 * statistics.median(times) / batch,
            "min_ms": 1000 * min(times) / batch, "reps": len(times)}


def child(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Time ``spec["cases"]`` on one model. One case: warm-up, then repetitions until
    ``min_reps``/``budget_s``/``max_reps``. Several cases (``--interleave``): warm-up each,
    then rounds that run every case once, so slow phases of the host hit all alike."""
    import warnings

    import torch
    torch.set_num_threads(spec["threads"])
    warnings.simplefilter("ignore")
    os.environ.setdefault("TQDM_DISABLE", "1")
    clf = load(spec["model"])
    out = []
    for batch in spec["batches"]:
        ctx = _context(clf, spec["model"], batch)
        runs: dict[str, Callable[[], Any]] = {}
        errors: dict[str, str] = {}
        for key in spec["cases"]:
            try:
                runs[key] = CASES[key].build(ctx)
                _timed(runs[key])  # warm-up
            except Exception as err:  # record, keep going
                runs.pop(key, None)
                errors[key] = f"{type(err).__name__}: {err}"[:300]
        times: dict[str, list[float]] = {k: [] for k in runs}
        before = probe_ms()
        end = time.perf_counter() + spec["budget_s"] * max(1, len(runs))
        for rnd in range(spec["max_reps"]):
            if rnd >= spec["min_reps"] and time.perf_counter() > end:
                break
            for key, run in runs.items():
                times[key].append(_timed(run))
        after = probe_ms()
        for key in spec["cases"]:
            if key in errors:
                out.append({"model": spec["model"], "case": key, "batch": batch,
                            "error": errors[key]})
            else:
                row = _row(spec["model"], key, batch, times[key])
                row["probe_ms"] = [round(before, 2), round(after, 2)]
                out.append(row)
    return out


def spawn(spec: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
    env = dict(os.environ, **MALLOC_RETAIN)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return [{"model": spec["model"], "case": c, "batch": b,
                 "error": f"timed out after {timeout:.0f} s"}
                for b in spec["batches"] for c in spec["cases"]]
    for line in proc.stdout.splitlines():
        if line.startswith(TAG):
            return json.loads(line[len(TAG):])
    return [{"model": spec["model"], "case": c, "batch": b,
             "error": f"exit {proc.returncode}: {proc.stderr[-300:]}"}
            for b in spec["batches"] for c in spec["cases"]]


# -- report --------------------------------------------------------------------------------
def add_ratios(rows: list[dict[str, Any]], stat: str = "ms") -> None:
    """Ratios of medians by default (``--ratio-stat min_ms``: of the fastest calls, which on
    a shared host are the least disturbed, but a single lucky call can skew them)."""
    by = {(r["model"], r["batch"], r["case"]): r for r in rows if "ms" in r}
    for r in rows:
        if "ms" not in r:
            continue
        key = (r["model"], r["batch"])
        fb, fw = by.get((*key, "reference/forward+backward")), by.get((*key, "reference/forward"))
        r["x_fwdbwd"] = r[stat] / fb[stat] if fb else None
        r["x_fwd"] = r[stat] / fw[stat] if fw else None
        c = CASES[r["case"]]
        r["x_peer"] = {p: r[stat] / by[(*key, p)][stat] for p in c.peers if (*key, p) in by}


def table(rows: list[dict[str, Any]]) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    lines = ["| model | batch | case | ms/img (median) | min ms/img | x fwd+bwd | x fwd | x peer |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['batch']} | {r['case']} | failed: "
                         f"{r['error'][:80]} | | | | |")
            continue
        peer = ", ".join(f"{v:.2f}x {k}" for k, v in r["x_peer"].items()) or "-"
        lines.append(f"| {r['model']} | {r['batch']} | {r['case']} | {r['ms']:.1f} | "
                     f"{r['min_ms']:.1f} | {fmt(r['x_fwdbwd'])} | {fmt(r['x_fwd'])} | {peer} |")
    return "\n".join(lines)


def targets_check(rows: list[dict[str, Any]]) -> list[str]:
    """The performance targets of issue 2, where the rows exist."""
    by = {(r["model"], r["batch"], r["case"]): r for r in rows if "ms" in r}
    out = []

    def line(text: str, ok: bool) -> None:
        out.append(f"- [{'x' if ok else ' '}] {text}")

    for name, limit, ref in (("saliency", 1.05, "x_fwdbwd"), ("guided_backprop", 1.05, "x_fwdbwd"),
                             ("gradcam", 1.1, "x_fwd")):
        m = by.get(("mobilenet_v2", 16, f"mindlens/{name}"))
        if m and m.get(ref) is not None:
            line(f"{name} mobilenet_v2 batch 16: {m[ref]:.2f} {ref} (target <= {limit})",
                 m[ref] <= limit)
    for (model, batch, c), r in sorted(by.items()):
        if c == "mindlens/gradcam" and "grad-cam/GradCAM" in r["x_peer"]:
            speedup = 1 / r["x_peer"]["grad-cam/GradCAM"]
            line(f"gradcam vs pytorch-grad-cam {model} batch {batch}: {speedup:.2f}x faster "
                 f"(target >= 3)", speedup >= 3)
        if c == "mindlens/guided_gradcam" and "captum/GuidedGradCam" in r["x_peer"]:
            ratio = r["x_peer"]["captum/GuidedGradCam"]
            line(f"guided_gradcam vs Captum {model} batch {batch}: {ratio:.2f}x its time "
                 f"(target < 1)", ratio < 1)
    for (model, batch, c), r in sorted(by.items()):
        for name, passes, ref in (("integrated_gradients", IG_STEPS, "x_fwdbwd"),
                                  ("smoothgrad", SG_SAMPLES, "x_fwdbwd"),
                                  ("rise", RISE_N, "x_fwd")):
            if c == f"mindlens/{name}" and r.get(ref) is not None:
                line(f"{name} {model} batch {batch}: {r[ref] / passes:.2f}x {passes} "
                     f"{'forward+backward passes' if ref == 'x_fwdbwd' else 'forwards'} "
                     f"(target <= 1.1)", r[ref] / passes <= 1.1)
        for name, ref, per in (("integrated_gradients", f"forward+backward x{IG_STEPS} rows", 1),
                               ("smoothgrad", f"forward+backward x{SG_SAMPLES} rows", 1),
                               ("rise", "forward x32 rows", RISE_N / 32)):
            base = by.get((model, batch, f"reference/{ref}"))
            if c == f"mindlens/{name}" and base and batch == 1:
                ratio = r["ms"] / (base["ms"] * per)
                line(f"{name} {model} batch 1: {ratio:.2f}x the same passes in plain "
                     f"channels-last batches ({ref}{', x' + str(per) if per != 1 else ''})",
                     ratio <= 1.1)
        if c == "mindlens/integrated_gradients" and "captum/IntegratedGradients" in r["x_peer"]:
            ratio = r["x_peer"]["captum/IntegratedGradients"]
            line(f"integrated_gradients vs Captum {model} batch {batch}: {ratio:.2f}x its "
                 f"time (target <= 1)", ratio <= 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--batch", default="1,16", help="comma-separated batch sizes")
    ap.add_argument("--cases", default="", help="regex on case keys (e.g. 'gradcam|reference')")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (noisier)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--interleave", action="store_true",
                    help="one process per model, cases timed round-robin (fairer ratios on "
                         "a busy host; no per-case memory isolation)")
    ap.add_argument("--ratio-stat", choices=("ms", "min_ms"), default="ms",
                    help="ratios of medians (default) or of the fastest calls")
    ap.add_argument("--json", help="also write all rows to this JSON file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(TAG + json.dumps(child(json.loads(args.child))), flush=True)
        return
    models = [m for m in args.models.split(",") if m]
    batches = [int(b) for b in args.batch.split(",") if b]
    reps = (1, 2, 3.0) if args.quick else (3, 7, 15.0)
    rows: list[dict[str, Any]] = []
    for model in models:
        keys = [c.key for c in CASES.values()
                if c.applies(model) and not (args.cases and not re.search(args.cases, c.key))]
        groups = [keys] if args.interleave else [[k] for k in keys]
        for group in groups:
            spec = {"model": model, "cases": group, "batches": batches,
                    "threads": args.threads, "min_reps": reps[0], "max_reps": reps[1],
                    "budget_s": reps[2]}
            t0 = time.perf_counter()
            got = spawn(spec, timeout=600 * len(group))
            rows.extend(got)
            for r in got:
                done = f"{r['ms']:.1f} ms/img" if "ms" in r else r["error"][:60]
                print(f"{model:17s} b{r['batch']:<3d} {r['case']:28s} {done}",
                      file=sys.stderr, flush=True)
            print(f"  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    add_ratios(rows, args.ratio_stat)
    print(f"ratios from {'the fastest call' if args.ratio_stat == 'min_ms' else 'medians'}; "
          f"host load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    print(table(rows))
    print()
    print("\n".join(targets_check(rows)))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
