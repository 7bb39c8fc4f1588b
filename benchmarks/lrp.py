"""Time mindlens ``lrp`` (epsilon_plus_flat) against Zennit EpsilonPlusFlat (same rules and
canonization, set up as in tests/methods/test_lrp_peers.py) and Captum LRP, next to one
forward and one forward+backward, on mobilenet_v2 and cifar10_resnet20 at batch 1 and 16.
``lrp (first call)`` empties the plan cache before each call (the tracing forward runs);
``lrp (cached)`` is a repeated call on the same model (plan, merged weights reused).

    MINDLENS_ASSETS=../shared/assets PYTHONPATH=src python benchmarks/lrp.py [--reps 3]

Prints median ms per image and ratios; the cases take turns within each repetition.
Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
os.environ.setdefault("TQDM_DISABLE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="mobilenet_v2,cifar10_resnet20")
    ap.add_argument("--batches", default="1,16")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import tempfile

    from tests.conftest import TORCHVISION_STUB, load_asset
    stub = Path(tempfile.mkdtemp())
    for rel, text in TORCHVISION_STUB.items():
        (stub / "torchvision" / rel).parent.mkdir(parents=True, exist_ok=True)
        (stub / "torchvision" / rel).write_text(text)
    sys.path.insert(0, str(stub))
    from captum.attr import LRP as CaptumLRP
    from tests.methods.test_lrp_peers import zennit_setup
    from zennit.attribution import Gradient

    from mindlens.allocator import give_back

    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.reps}, "
          f"load average at start {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"{'model':18} {'B':>3} {'method':28} {'ms/img':>9} {'x fwd+bwd':>9} {'x zennit':>9}")
    for name in args.models.split(","):
        clf = load_asset(name)
        zmodel, zcomp = zennit_setup(clf)
        for batch in map(int, args.batches.split(",")):
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(batch, 3, *clf.input_size, generator=gen) * 0.5
            cls = torch.arange(batch) % 9 + 1 + clf.logit_offset

            cases = make_cases(clf, zmodel, zcomp, x, cls, Gradient, CaptumLRP)
            rows: dict[str, float | str] = {}
            for label, fn in cases.items():
                try:
                    fn()  # warm-up
                except Exception as exc:  # a peer that cannot run this model
                    rows[label] = f"failed: {type(exc).__name__}: {str(exc)[:60]}"
            # round robin: on a shared machine, load changes hit every case alike
            times: dict[str, list[float]] = {k: [] for k in cases if k not in rows}
            for _ in range(args.reps):
                for label in times:
                    t = time.perf_counter()
                    cases[label]()
                    times[label].append(time.perf_counter() - t)
                    give_back()  # no case runs on the memory mindlens keeps after a call
            for label, ts in times.items():
                rows[label] = statistics.median(ts) * 1000 / batch
            rows = {k: rows[k] for k in cases}
            fb, zen = rows["forward+backward to input"], rows["zennit EpsilonPlusFlat"]
            for label, ms in rows.items():
                if isinstance(ms, str):
                    print(f"{name:18} {batch:>3} {label:28} {ms}")
                    continue
                rz = f"{ms / zen:9.2f}" if isinstance(zen, float) else f"{'-':>9}"
                print(f"{name:18} {batch:>3} {label:28} {ms:9.1f} {ms / fb:9.2f} {rz}")
            sys.stdout.flush()


def make_cases(clf, zmodel, zcomp, x, cls, Gradient, CaptumLRP) -> dict:
    """The timed callables for one model and batch."""
    import mindlens
    from mindlens.allocator import reusing_memory

    model = clf.module

    def fwd():  # the units with freed memory reused, as mindlens's methods run
        with torch.no_grad(), reusing_memory():
            model(x)

    def fwdbwd():
        xi = x.clone().requires_grad_(True)
        with reusing_memory():
            torch.autograd.grad(model(xi).gather(1, cls[:, None]).sum(), xi)

    def ours():
        mindlens.explain(clf, x, "lrp", target=cls - clf.logit_offset, init="one")

    def ours_first():  # a model not seen before: the tracing forward runs again
        clear = getattr(mindlens.methods.lrp, "clear_cache", None)
        if clear is not None:
            clear()
        ours()

    def zennit():
        with Gradient(zmodel, zcomp) as attr:
            attr(x, lambda o: torch.zeros_like(o).scatter_(1, cls[:, None], 1.0))

    def captum():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            CaptumLRP(model).attribute(x.clone().requires_grad_(True), target=cls)


    return {"forward (no_grad)": fwd, "forward+backward to input": fwdbwd,
            "mindlens lrp (first call)": ours_first, "mindlens lrp (cached)": ours,
            "zennit EpsilonPlusFlat": zennit, "captum LRP": captum}


if __name__ == "__main__":
    main()
