"""Train the bundled demo models on freshly generated retina images (CPU, minutes).

    python -m mindlens.demo.train --out DIR [--shortcut | --colour | --colour-control]
                                  [--seed 0] [--n-train N] [--epochs E] [--batch B] [--lr R]

writes ``retina.safetensors`` + ``retina.json`` (or ``shortcut.*``, ``colour.*``,
``colour_control.*``): the weights and a model card that :func:`mindlens.load_model` reads.
Each bundled model has its recipe in :data:`RECIPES` (architecture, images, epochs, batch,
peak rate), which the options override; the shortcut and colour models: 1500-2000 images,
4 epochs, a 16x16 feature map. Training images come from ``seed``, test images from
``seed + 1`` (never seen in training); the card records both, the data sizes, the test
figures and the training time; for the retina model also how often Grad-CAM points at a
lesion (within 4 px) on the test set's diseased eyes.

The retina model is the demo of a model worth trusting (the shortcut and colour models are
the demos of models that are not), so it is trained to be right for the right reasons:
stage 1 trains the 16x16 network on 3000 images for 10 epochs (cross-entropy only, about
seven minutes on two idle threads); stage 2 drops its second pooling (a 32x32 feature map,
one cell per lesion-sized 4x4 px) and fine-tunes it for 8 epochs on the same images with
cross-entropy plus 0.1 x :func:`lesion_loss`, which uses the exact lesion masks the demo
world draws to pull the class-diseased CAM onto the lesions (Ross et al. 2017; Li et al.
2018; about 14 minutes on two busy threads). Without it the network is about as accurate, but its
Grad-CAM points at a lesion on only about a third (16x16) or two thirds (32x32) of the
diseased eyes: it uses context, not only the lesions.
The shortcut model is trained on the ``"train"`` split of :mod:`mindlens.demo.shortcut`
(marker on every diseased image) and tested on images without the marker, with it on the
diseased images, and with it moved to the healthy ones. The colour model is trained on the
``"train"`` split of :mod:`mindlens.demo.colour` (a cyan cast on every diseased image) and
its control on the very same scenes without the cast, with the same recipe; both are
tested with the cast on the diseased images, without it, and with it on the healthy ones.
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

from ..model import Classifier
from . import colour, retina, shortcut
from .model import POOLED, WIDTHS, build

ASSETS = Path(__file__).parent / "assets"
#: how each bundled model was trained: architecture (factory kwargs of
#: :func:`mindlens.demo.model.build`), training images, epochs, batch size, peak rate;
#: the retina model also the weight of :func:`lesion_loss` and, under ``init``, the
#: stage-1 recipe (on the same seed) whose weights it is fine-tuned from
RECIPES: dict[str, dict[str, Any]] = {
    "retina": {"arch": {"widths": list(WIDTHS), "pooled": 1},
               "n_train": 3000, "epochs": 8, "batch": 64, "lr": 2e-3, "lesion_weight": 0.1,
               "init": {"arch": {"widths": list(WIDTHS), "pooled": POOLED},
                        "n_train": 3000, "epochs": 10, "batch": 64, "lr": 4e-3}},
    **{name: {"arch": {"widths": list(WIDTHS), "pooled": POOLED},
              "n_train": n, "epochs": 4, "batch": 64, "lr": 4e-3}
       for name, n in (("shortcut", 2000), ("colour", 1500), ("colour_control", 1500))},
}
TOLERANCE = 4.0  # pointing-game tolerance in pixels (lesions have radii of 1-4.5 px)


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


def as_classifier(model: torch.nn.Module, mean: torch.Tensor, std: torch.Tensor
                  ) -> Classifier:
    """The freshly trained network as a :class:`~mindlens.model.Classifier` (as its card
    will load it)."""
    return Classifier(model.eval(), (retina.SIZE, retina.SIZE), 3, mean.tolist(), std.tolist(),
                      labels=list(retina.LABELS))


def gradcam_pointing(clf: Classifier, images: np.ndarray, labels: np.ndarray,
                     masks: np.ndarray, tolerance: float = TOLERANCE, batch: int = 100
                     ) -> dict[str, Any]:
    """Grad-CAM (``layer="auto"``, class ``diseased``) on the diseased images: the pointing
    game (Zhang et al. 2016; hit if the map's maximum lies within ``tolerance`` px of a
    lesion pixel, :func:`mindlens.metrics.pointing_game`) and the relevance mass on the
    lesions (:func:`mindlens.metrics.relevance_mass_accuracy`), averaged over the images."""
    from ..api import explain
    from ..metrics import pointing_game, relevance_mass_accuracy

    sick = np.flatnonzero(labels == 1)
    hits, mass, info = [], [], {}
    for i in range(0, len(sick), batch):
        idx = sick[i:i + batch]
        ex = explain(clf, list(images[idx]), "gradcam", target=1)
        mk = torch.from_numpy(masks[idx])
        hits.append(pointing_game(ex.maps[:, 0], mk, tolerance))
        mass.append(relevance_mass_accuracy(ex.maps[:, 0], mk))
        info = {"layer": ex.params["layer"], "feature_map": list(ex.native_shape or ())}
    return {"pointing_game": float(torch.nanmean(torch.cat(hits))),
            "relevance_mass": float(torch.nanmean(torch.cat(mass))),
            "diseased_images": len(sick), "tolerance_px": float(tolerance), **info}


def lesion_loss(features: torch.Tensor, classifier: torch.nn.Linear, masks: torch.Tensor,
                temperature: float = 1.0) -> torch.Tensor:
    """Where the class-"diseased" evidence lies, scored against the lesion masks (a
    localisation term in the spirit of Ross et al. 2017, "Right for the Right Reasons",
    arXiv:1703.03717, and Li et al. 2018, "Tell Me Where to Look", arXiv:1802.10171).

    ``features``: the last feature map ``[N, C, h, w]`` of diseased images; ``masks``:
    their lesion masks ``[N, H, W]``. With a global-average-pooling head the class
    activation map of "diseased" (Zhou et al. 2016) is ``sum_k w_k A_k``, and Grad-CAM for
    that class is its positive part. Its cells are read as logits of a spatial softmax; the
    loss is ``-log`` of the probability on the cells that hold a lesion pixel (the mask
    max-pooled to ``h x w``), so the map's maximum is pulled onto a lesion and away from
    vessels, optic disc and background. Images without lesion pixels are skipped."""
    cam = torch.einsum("nchw,c->nhw", features, classifier.weight[1])
    target = F.adaptive_max_pool2d(masks[:, None].float(), features.shape[-2:])[:, 0]
    keep = target.flatten(1).any(1)
    if not keep.any():
        return cam.sum() * 0.0
    logp = F.log_softmax(cam[keep].flatten(1) / temperature, dim=1)
    inside = target[keep].flatten(1) > 0
    return -torch.logsumexp(logp.masked_fill(~inside, float("-inf")), dim=1).mean()


def fit(images: np.ndarray, labels: np.ndarray, seed: int, epochs: int, batch: int,
        lr: float, log: bool = True, arch: dict[str, Any] | None = None,
        masks: np.ndarray | None = None, lesion_weight: float = 0.0,
        init: dict[str, torch.Tensor] | None = None,
        norm: tuple[torch.Tensor, torch.Tensor] | None = None,
        ) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """AdamW with a one-cycle schedule and flip augmentation; returns model, mean, std.
    ``arch``: keyword arguments of :func:`~mindlens.demo.model.build`. With ``masks`` and
    ``lesion_weight > 0`` the loss adds ``lesion_weight`` times :func:`lesion_loss` on the
    batch's diseased images. ``init``: a state dict to start from (fine-tuning), ``norm``:
    its input mean and std (default: measured on the first 500 images)."""
    torch.manual_seed(seed)
    if norm is None:
        px = images[:500].reshape(-1, 3).astype(np.float64) / 255.0
        mean = torch.tensor(px.mean(0), dtype=torch.float32)
        std = torch.tensor(px.std(0), dtype=torch.float32)
    else:
        mean, std = norm
    model = build(**(arch or {}))
    if init is not None:
        model.load_state_dict(init)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * (len(images) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    y_all = torch.from_numpy(labels)
    supervise = masks is not None and lesion_weight > 0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(images), generator=gen).numpy()
        total, local, t0 = 0.0, 0.0, time.time()
        for i in range(len(images) // batch):
            idx = np.sort(order[i * batch:(i + 1) * batch])
            x = to_tensor(images[idx], mean, std)
            m = torch.from_numpy(masks[idx]) if supervise else None
            flip = torch.rand(2, generator=gen)
            for dim, f in ((3, flip[0]), (2, flip[1])):
                if f < 0.5:
                    x = x.flip(dim)
                    m = m.flip(dim - 1) if m is not None else None
            feats = model.features(x)
            loss = F.cross_entropy(model.classifier(model.pool(feats).flatten(1)), y_all[idx])
            if m is not None:
                term = lesion_loss(feats, model.classifier, m)
                loss = loss + lesion_weight * term
                local += term.item()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        if log:
            print(f"epoch {epoch + 1}/{epochs}: loss {total / max(1, i + 1):.4f} "
                  f"lesion {local / max(1, i + 1):.4f} ({time.time() - t0:.0f} s)", flush=True)
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
    ap.add_argument("--n-train", type=int, help="training images (default: the recipe's)")
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--epochs", type=int, help="default: the recipe's")
    ap.add_argument("--batch", type=int, help="default: the recipe's")
    ap.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (at most 2 here)")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    name = ("shortcut" if args.shortcut else "colour" if args.colour else
            "colour_control" if args.colour_control else "retina")
    recipe = RECIPES[name]
    for key in ("n_train", "epochs", "batch", "lr"):
        if getattr(args, key) is None:
            setattr(args, key, recipe[key])
    t0 = time.time()
    masks = None
    if args.colour or args.colour_control:
        split = "train" if args.colour else "test"
        images, labels, _, _ = colour.generate(args.n_train, args.seed, split=split)
    elif args.shortcut:
        images, labels, _, _ = shortcut.generate(args.n_train, args.seed, split="train")
    else:
        images, labels, masks = retina.generate(args.n_train, args.seed)
    print(f"generated {len(images)} training images in {time.time() - t0:.1f} s", flush=True)
    t1 = time.time()
    init, norm, stage1 = None, None, None
    if "init" in recipe:  # stage 1: the pre-training this recipe fine-tunes from
        stage1 = recipe["init"]
        x1, y1, _ = retina.generate(stage1["n_train"], args.seed)
        pre = fit(x1, y1, args.seed, stage1["epochs"], stage1["batch"], stage1["lr"],
                  arch=stage1["arch"])
        init, norm = pre[0].state_dict(), (pre[1], pre[2])
    model, mean, std = fit(images, labels, args.seed, args.epochs, args.batch, args.lr,
                           arch=recipe["arch"], masks=masks,
                           lesion_weight=recipe.get("lesion_weight", 0.0), init=init,
                           norm=norm)
    train_s = time.time() - t1
    metrics = card_metrics(name, model, mean, std, args.n_test, args.seed + 1)
    training = {
        "seed": args.seed, "train_size": args.n_train, "test_seed": args.seed + 1,
        "test_size": args.n_test, "epochs": args.epochs, "batch": args.batch,
        "lr": args.lr, "threads": args.threads, "seconds": round(train_s, 1),
    }
    if stage1 is not None:
        training["lesion_weight"] = recipe["lesion_weight"]
        training["fine_tuned_from"] = {k: v for k, v in stage1.items() if k != "arch"} | {
            "factory_kwargs": stage1["arch"]}
    card = write_model(args.out, name, model, mean, std, recipe["arch"], training, metrics)
    print(f"wrote {args.out / (name + '.json')} (training {train_s:.0f} s)")
    return card


def card_metrics(name: str, model: torch.nn.Module, mean: torch.Tensor, std: torch.Tensor,
                 n: int, seed: int) -> dict[str, Any]:
    """The figures a card records, on ``n`` test images of ``seed``."""
    metrics: dict[str, Any] = {}
    if name in ("colour", "colour_control"):
        for split, key in (("train", "cast_on_diseased"), ("test", "no_cast"),
                           ("swapped", "cast_on_healthy")):
            x, y, _, _ = colour.generate(n, seed, split=split)
            metrics[f"test_accuracy_{key}"] = accuracy(model, x, y, mean, std)
    elif name == "shortcut":
        for split, key in (("test", "no_marker"), ("train", "marker_on_diseased"),
                           ("swapped", "marker_on_healthy")):
            x, y, _, _ = shortcut.generate(n, seed, split=split)
            metrics[f"test_accuracy_{key}"] = accuracy(model, x, y, mean, std)
    else:
        x, y, m = retina.generate(n, seed)
        metrics["test_accuracy"] = accuracy(model, x, y, mean, std)
        cam = gradcam_pointing(as_classifier(model, mean, std), x, y, m)
        metrics["test_gradcam_pointing_game"] = round(cam["pointing_game"], 4)
        metrics["test_gradcam_pointing_tolerance_px"] = cam["tolerance_px"]
    print(json.dumps(metrics), flush=True)
    return metrics


def write_model(out: Path, name: str, model: torch.nn.Module, mean: torch.Tensor,
                std: torch.Tensor, arch: dict[str, Any], training: dict[str, Any],
                metrics: dict[str, Any]) -> dict[str, Any]:
    """Write ``<name>.safetensors`` and its card ``<name>.json`` into ``out``."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(out / f"{name}.safetensors"))
    card = {
        "name": f"mindlens demo {name} model",
        "factory": "mindlens.demo.model:build",
        "factory_kwargs": {"classes": 2, **arch},
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
            **training, "parameters": sum(p.numel() for p in model.parameters()),
            "torch": torch.__version__, **metrics,
        },
    }
    (out / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


if __name__ == "__main__":
    main()
