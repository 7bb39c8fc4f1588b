"""Train the bundled demo models on freshly generated retina images (CPU, minutes).

    python -m mindlens.demo.train --out DIR [--shortcut | --colour | --colour-control]
                                  [--seed 0] [--n-train 3000]

writes ``retina.safetensors`` + ``retina.json`` (or ``shortcut.*``, ``colour.*``,
``colour_control.*``): the
weights and a model card that :func:`mindlens.load_model` reads. Training images come from
``seed``, test images from ``seed + 1`` (never seen in training); the card records both, the
data sizes, the test accuracy and the training time. The shortcut model is trained on the
``"train"`` split of :mod:`mindlens.demo.shortcut` (marker on every diseased image) and
tested on images without the marker, with it on the diseased images, and with it moved to
the healthy ones. The colour model is trained on the ``"train"`` split of
:mod:`mindlens.demo.colour` (a cyan cast on every diseased image) and its control on the very
same scenes without the cast, with the same recipe; both are tested with the cast on the
diseased images, without it, and with it on the healthy ones. The bundled pair was trained
with ``--n-train 1500 --epochs 4`` (about a minute and a half each on two threads).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import colour, retina, shortcut
from .model import WIDTHS, build

ASSETS = Path(__file__).parent / "assets"


def to_tensor(images: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``uint8 [N, H, W, 3]`` -> normalised ``float32 [N, 3, H, W]``."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray,
             mean: torch.Tensor, std: torch.Tensor, batch: int = 250) -> float:
    model.eval()
    hits = 0
    for i in range(0, len(images), batch):
        pred = model(to_tensor(images[i:i + batch], mean, std)).argmax(1).numpy()
        hits += int((pred == labels[i:i + batch]).sum())
    return hits / max(len(images), 1)


def fit(images: np.ndarray, labels: np.ndarray, seed: int, epochs: int, batch: int,
        lr: float, log: bool = True) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """Adam with a one-cycle schedule and flip augmentation; returns model, mean, std."""
    torch.manual_seed(seed)
    px = images[:500].reshape(-1, 3).astype(np.float64) / 255.0
    mean = torch.tensor(px.mean(0), dtype=torch.float32)
    std = torch.tensor(px.std(0), dtype=torch.float32)
    model = build()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * (len(images) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    y_all = torch.from_numpy(labels)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(images), generator=gen).numpy()
        total, t0 = 0.0, time.time()
        for i in range(len(images) // batch):
            idx = np.sort(order[i * batch:(i + 1) * batch])
            x = to_tensor(images[idx], mean, std)
            flip = torch.rand(2, generator=gen)
            if flip[0] < 0.5:
                x = x.flip(3)
            if flip[1] < 0.5:
                x = x.flip(2)
            loss = F.cross_entropy(model(x), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        if log:
            print(f"epoch {epoch + 1}/{epochs}: loss {total / max(1, i + 1):.4f} "
                  f"({time.time() - t0:.0f} s)", flush=True)
    model.eval()
    return model, mean, std


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m mindlens.demo.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ASSETS, help="folder for weights and card")
    ap.add_argument("--shortcut", action="store_true", help="train the shortcut model")
    ap.add_argument("--colour", action="store_true", help="train the colour-cue model")
    ap.add_argument("--colour-control", action="store_true",
                    help="train the colour model's control (same scenes, no cast)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (at most 2 here)")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    name = ("shortcut" if args.shortcut else "colour" if args.colour else
            "colour_control" if args.colour_control else "retina")
    t0 = time.time()
    if args.colour or args.colour_control:
        split = "train" if args.colour else "test"
        images, labels, _, _ = colour.generate(args.n_train, args.seed, split=split)
    elif args.shortcut:
        images, labels, _, _ = shortcut.generate(args.n_train, args.seed, split="train")
    else:
        images, labels, _ = retina.generate(args.n_train, args.seed)
    print(f"generated {len(images)} training images in {time.time() - t0:.1f} s", flush=True)
    t1 = time.time()
    model, mean, std = fit(images, labels, args.seed, args.epochs, args.batch, args.lr)
    train_s = time.time() - t1
    test_seed = args.seed + 1
    metrics: dict[str, Any] = {}
    if args.colour or args.colour_control:
        for split, key in (("train", "cast_on_diseased"), ("test", "no_cast"),
                           ("swapped", "cast_on_healthy")):
            x, y, _, _ = colour.generate(args.n_test, test_seed, split=split)
            metrics[f"test_accuracy_{key}"] = accuracy(model, x, y, mean, std)
    elif args.shortcut:
        for split, key in (("test", "no_marker"), ("train", "marker_on_diseased"),
                           ("swapped", "marker_on_healthy")):
            x, y, _, _ = shortcut.generate(args.n_test, test_seed, split=split)
            metrics[f"test_accuracy_{key}"] = accuracy(model, x, y, mean, std)
    else:
        x, y, _ = retina.generate(args.n_test, test_seed)
        metrics["test_accuracy"] = accuracy(model, x, y, mean, std)
    print(json.dumps(metrics), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(args.out / f"{name}.safetensors"))
    card = {
        "name": f"mindlens demo {name} model",
        "factory": "mindlens.demo.model:build",
        "factory_kwargs": {"classes": 2, "widths": list(WIDTHS)},
        "weights": f"{name}.safetensors",
        "input_size": [retina.SIZE, retina.SIZE],
        "channels": 3,
        "mean": [round(float(v), 6) for v in mean],
        "std": [round(float(v), 6) for v in std],
        "labels": list(retina.LABELS),
        "training": {
            "data": {"shortcut": "mindlens.demo.shortcut (split train: marker on every "
                     "diseased image)", "colour": "mindlens.demo.colour (split train: cyan "
                     "cast on every diseased image)", "colour_control": "mindlens.demo.colour "
                     "(split test: the colour model's scenes without the cast)"
                     }.get(name, "mindlens.demo.retina"),
            "seed": args.seed, "train_size": args.n_train, "test_seed": test_seed,
            "test_size": args.n_test, "epochs": args.epochs, "batch": args.batch,
            "lr": args.lr, "threads": args.threads, "seconds": round(train_s, 1),
            "parameters": sum(p.numel() for p in model.parameters()),
            "torch": torch.__version__, **metrics,
        },
    }
    (args.out / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {args.out / (name + '.json')} (training {train_s:.0f} s)")
    return card


if __name__ == "__main__":
    main()
