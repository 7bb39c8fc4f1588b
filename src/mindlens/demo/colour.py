"""Retina images with a colour cue, for checking whether a method can reveal a colour
shortcut (spec §10, "ability to detect colour-based problems").

A second clinic's camera has a cooler white balance, and that clinic sends the diseased
cases: in the ``"train"`` split every diseased image gets a slight global cyan cast over
the retina (green and blue raised by a few per cent of the range, red unchanged), healthy
images none. The scenes are those of :func:`mindlens.demo.retina.generate` (same bytes for
the same ``seed`` before the cast), lesions included, so a network can learn the lesions
or the colour; trained briefly it learns the colour. ``"test"`` has no cast at all and
``"swapped"`` puts it on the healthy images only: a network that reads the colour fails
there. The cast is spatially uniform over the retina, so a purely spatial relevance map
(CAM family) has no way to show it; per-channel relevance can.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from . import retina

SPLITS = {"train": "diseased", "test": "none", "swapped": "healthy"}
#: the cast added to the retina's RGB values in [0, 1] (red, green, blue)
CAST = (0.0, 0.04, 0.07)


def generate(n: int, seed: int = 0, split: str = "train", cast: tuple[float, float, float]
             = CAST) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Retina images of :func:`mindlens.demo.retina.generate` with the colour cast on the
    images that ``split`` selects.

    Returns images ``uint8 [n, H, W, 3]``, labels ``int64 [n]``, lesion masks
    ``bool [n, H, W]`` and ``cued`` ``bool [n]`` (which images carry the cast).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    images, labels, masks = retina.generate(n, seed)
    cued = {"diseased": labels == 1, "healthy": labels == 0,
            "none": np.zeros(n, bool)}[SPLITS[split]]
    return apply_cast(images, cued, cast), labels, masks, cued


def apply_cast(images: np.ndarray, which: np.ndarray, cast: tuple[float, float, float] = CAST
               ) -> np.ndarray:
    """Add ``cast`` (RGB in [0, 1]) to the retina pixels (not the black background) of the
    images selected by the bool array ``which``; returns a new uint8 array."""
    out = images.copy()
    if not which.any():
        return out
    sel = images[which].astype(np.float32) / 255.0
    retina_px = (sel.max(axis=-1, keepdims=True) > 0.04).astype(np.float32)
    sel += retina_px * np.asarray(cast, np.float32)
    out[which] = (np.clip(sel, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return out


def greyscale(images: np.ndarray) -> np.ndarray:
    """Luminance (ITU-R BT.601 weights) copied into all three channels: no colour left."""
    lum = images.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
    return np.repeat((lum + 0.5).clip(0, 255).astype(np.uint8)[..., None], 3, axis=-1)


#: seed of the benchmark images (the colour models were trained on seed 0, tested on 1)
BENCHMARK_SEED = 7777


def benchmark(method: str, params: dict[str, Any] | None = None, n: int = 32,
              seed: int = BENCHMARK_SEED, batch_size: int = 16) -> dict[str, Any]:
    """Can ``method`` reveal the colour shortcut? Explain class ``diseased`` for ``n`` fresh
    images (cast on the diseased ones, as in training) with the bundled colour-cue model
    and its control, and compare the net colour share of the explanations
    (:func:`mindlens.metrics.colour.net_colour_share`).

    Returns ``colour_auroc`` (AUROC of "the cue model's share is higher", 0.5 = chance),
    the mean shares ``colour_share_cue`` and ``colour_share_control``, and the mean
    ``|relevance|`` share per channel of both models; ``colour_auroc`` is ``"cannot show"``
    when the method gives no per-channel relevance.
    """
    from .. import methods
    from ..metrics.colour import auroc, channel_shares, net_colour_share
    from ..targets import Targets
    from . import load_demo_model

    algo = methods.get(method)(**(params or {}))
    images, _, _, _ = generate(n, seed, split="train")
    stat: dict[str, list[torch.Tensor]] = {}
    for name in ("colour", "colour_control"):
        clf = load_demo_model(name)
        algo.check(clf)
        for i in range(0, n, batch_size):
            x = clf.preprocess(list(images[i:i + batch_size]))
            expl = algo.explain(clf, x, Targets(torch.ones(len(x), 1, dtype=torch.long)))
            raw = None if expl.raw is None else expl.raw[:, 0]
            share = net_colour_share(raw)
            if share is None:
                return {"colour_auroc": "cannot show"}
            stat.setdefault(name, []).append(share)
            stat.setdefault(name + "_channels", []).append(channel_shares(raw))
    cue, control = torch.cat(stat["colour"]), torch.cat(stat["colour_control"])
    return {"colour_auroc": auroc(cue, control),
            "colour_share_cue": float(cue.mean()), "colour_share_control": float(control.mean()),
            "channel_shares_cue": [round(float(v), 4) for v in
                                   torch.cat(stat["colour_channels"]).mean(0)],
            "channel_shares_control": [round(float(v), 4) for v in
                                       torch.cat(stat["colour_control_channels"]).mean(0)]}
