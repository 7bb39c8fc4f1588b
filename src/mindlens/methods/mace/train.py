"""Training a MACE unit on a frozen classifier (spec ``methods.md`` §8.4).

The base model never changes: its features ``F``, head representation ``z`` and
probabilities ``p`` are computed once (:func:`~.data.cache_features`) and training only
touches the unit. Labels are not used: the losses compare the unit with the model's own
outputs. A checkpoint next to the output file (``<out>.ckpt``) is written after every
epoch, so a killed run started again with the same arguments resumes where it stopped;
with the same seed, an interrupted and a straight run give the same unit.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from ...errors import InputError
from ...model import Classifier
from .attach import Attachment, attach, head_logits, model_fingerprint
from .data import FeatureCache, ImageSet, ImagesLike, cache_features
from .prototypes import build_prototypes, concept_scores
from .store import TrainedUnit
from .unit import MaceUnit, UnitConfig, mace_losses


@torch.no_grad()
def evaluate(unit: MaceUnit, clf: Classifier, att: Attachment, cache: FeatureCache,
             chunk: int = 256) -> dict[str, float]:
    """Fidelity (argmax of the surrogate's ``p_hat`` = argmax of the model's ``p``),
    relevance accuracy (argmax ``r`` = argmax ``p``) and the MSE of ``z_hat``."""
    head = att.head_module(clf)
    agree = rel = 0
    se = 0.0
    for start in range(0, cache.F.shape[0], chunk):
        sl = slice(start, start + chunk)
        out = unit(cache.F[sl])
        p_hat = head_logits(clf, head, out.z_hat).argmax(1)
        target = cache.p[sl].argmax(1)
        agree += int((p_hat == target).sum())
        rel += int((out.relevance.argmax(1) == target).sum())
        se += float((out.z_hat - cache.z[sl]).pow(2).sum())
    n = cache.F.shape[0]
    return {"fidelity": agree / n, "relevance_accuracy": rel / n,
            "mse": se / (n * cache.z.shape[1])}


def _progress(enabled: bool) -> Any:
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    return Progress(TextColumn("MACE epoch"), MofNCompleteColumn(), BarColumn(),
                    TextColumn("{task.fields[stats]}"))


def train(
    clf: Classifier,
    images: ImagesLike,
    out_path: str | Path | None,
    epochs: int = 30,
    seed: int = 0,
    concepts: int = 10,
    embed: int = 32,
    hidden: int = 256,
    batch_size: int = 32,
    lr: float = 1e-3,
    val_fraction: float = 0.1,
    prototypes: int = 5,
    prototype_size: int = 32,
    progress: bool = True,
    prune_threshold: float | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainedUnit:
    """Train a MACE unit for ``clf`` on ``images`` (a folder, files, arrays or a
    model-space tensor) and write it to ``out_path`` (``None``: do not write).

    Losses and weights as in the reference code (§8.3); Adam with ``lr`` (reference 1e-4
    over 50 epochs; 1e-3 converges in fewer epochs on small sets). ``val_fraction`` of the
    images (when there are at least 10) are held out to measure fidelity. ``on_epoch``
    is called after each epoch with the epoch number and the monitored numbers.
    ``prune_threshold``: after training, prune every concept whose contribution
    ``rho_{c,q}`` exceeds the threshold on no training image (the reference code's mask
    came from such counts with 0.05; spec §8.2); fidelity is measured after pruning.
    """
    if epochs < 1 or concepts < 1 or embed < 1 or batch_size < 1:
        raise InputError("epochs, concepts, embed and batch_size must be positive")
    if not 0 <= val_fraction < 1:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}")
    data = ImageSet(images, clf)
    att = attach(clf, data.batch([0]))
    fingerprint = model_fingerprint(clf)
    cache = cache_features(clf, data, att)
    n = cache.F.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = round(n * val_fraction) if n >= 10 else 0
    val_idx, train_idx = order[:n_val], order[n_val:]
    train_set = FeatureCache(cache.F[train_idx], cache.z[train_idx], cache.p[train_idx])
    val_set = FeatureCache(cache.F[val_idx], cache.z[val_idx], cache.p[val_idx])

    d, h, w = cache.F.shape[1:]
    config = UnitConfig(d, h, w, cache.p.shape[1], concepts, embed, cache.z.shape[1], hidden)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unit = MaceUnit(config)
    opt = torch.optim.Adam(unit.parameters(), lr=lr)
    shuffle = torch.Generator().manual_seed(seed + 1)
    key = json.dumps({"config": config.to_dict(), "fingerprint": fingerprint, "n": n,
                      "seed": seed, "lr": lr, "batch_size": batch_size,
                      "val_fraction": val_fraction})
    ckpt = Path(str(out_path) + ".ckpt") if out_path is not None else None
    start = 0
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        if state.get("key") == key:
            unit.load_state_dict(state["unit"])
            opt.load_state_dict(state["opt"])
            shuffle.set_state(state["shuffle"])
            start = int(state["epoch"])

    head = att.head_module(clf)
    stats: dict[str, float] = {}
    with _progress(progress) as bar, clf.patched():
        task = bar.add_task("train", total=epochs, completed=start, stats="") if bar else None
        for epoch in range(start, epochs):
            unit.train()
            perm = torch.randperm(len(train_idx), generator=shuffle)
            sums: dict[str, float] = {}
            for i in range(0, len(perm), batch_size):
                b = perm[i:i + batch_size]
                out = unit(train_set.F[b])
                p_hat = head_logits(clf, head, out.z_hat).softmax(dim=1)
                losses = mace_losses(out, train_set.z[b], train_set.p[b], p_hat)
                opt.zero_grad(set_to_none=True)
                grads = torch.autograd.grad(losses.total, list(unit.parameters()),
                                            allow_unused=True)
                for param, g in zip(unit.parameters(), grads, strict=True):
                    param.grad = g
                opt.step()
                for k, v in losses.items().items():
                    sums[k] = sums.get(k, 0.0) + v * len(b)
            unit.eval()
            stats = {k: v / len(perm) for k, v in sums.items()}
            stats.update(evaluate(unit, clf, att, val_set if n_val else train_set))
            if ckpt is not None:
                torch.save({"key": key, "unit": unit.state_dict(), "opt": opt.state_dict(),
                            "shuffle": shuffle.get_state(), "epoch": epoch + 1}, ckpt)
            if bar is not None:
                bar.update(task, advance=1, stats=" ".join(
                    f"{k} {stats[k]:.3f}" for k in ("total", "mse", "fid", "rel", "trip",
                                                     "fidelity")))
            if on_epoch is not None:
                on_epoch(epoch + 1, stats)
        unit.requires_grad_(False)
        if prune_threshold is not None:
            rho, _ = concept_scores(unit, cache)
            unit.prune((rho > prune_threshold).any(dim=0))
        final = evaluate(unit, clf, att, val_set if n_val else train_set)
        protos = build_prototypes(clf, unit, cache, data, prototypes, prototype_size) \
            if prototypes > 0 else None
    meta = {
        "model_name": clf.name, "fingerprint": fingerprint,
        "input_size": list(clf.input_size), "labels": list(clf.labels or []),
        "fidelity": final["fidelity"], "fidelity_on": "held-out" if n_val else "training",
        "relevance_accuracy": final["relevance_accuracy"], "mse": final["mse"],
        "train": {"images": n, "held_out": n_val, "epochs": epochs, "seed": seed,
                  "lr": lr, "batch_size": batch_size,
                  "losses": {k: stats.get(k) for k in ("total", "mse", "fid", "rel", "trip")}},
        "pruned": int((unit.keep == 0).sum()), "prune_threshold": prune_threshold,
        "reconstructs": "logits" if att.head is None else f"input of {att.head}",
    }
    result = TrainedUnit(unit, att, meta, protos)
    if out_path is not None:
        result.save(out_path)
        if ckpt is not None and ckpt.exists():
            ckpt.unlink()
    return result
