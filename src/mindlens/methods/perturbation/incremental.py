"""Incremental inference for occlusion, in the spirit of Krypton (Nakandala, Kumar,
Papakonstantinou, SIGMOD 2019, "Incremental and Approximate Inference for Faster
Occlusion-based Deep CNN Explanations"): an occluded copy differs from the clean image only
inside the window, so each layer only needs recomputing where that change can reach.

How it works here: the model's own Python ``forward`` runs on a
:class:`~.patched.PatchTensor`, a tensor-like object (``__torch_function__`` protocol)
that stands for ``n`` occluded copies of one image. It holds the clean activation
``[1, C, *S]`` (computed once per image and cached by call order), and per copy only a
*patch*: the exact values of that copy inside a box that contains every position where
the copy can differ from the clean activation.

- convolutions, max/avg pooling and strided slicing recompute only the output box the input
  box can reach (receptive-field arithmetic per axis), from the input region it needs;
- element-wise functions (ReLU, ReLU6, sigmoid, batch norm in eval mode, ...), scalar
  arithmetic, channel slicing and padding act on the patch alone;
- element-wise operations between two patched tensors (residual ``+``) work on the union
  of both boxes;
- any other operation (global pooling, flatten, linear, concatenation, ...) first turns the
  patched tensors into ordinary full tensors ``[n, C, *S]`` and runs unchanged: from there
  on the computation is the ordinary one. The result is therefore always exact (up to
  floating-point rounding of the smaller convolutions); only the speed depends on how much
  of the network is a chain of supported operations.

Beyond Krypton's patch arithmetic, three things decide the speed on a CPU (measured on
mobilenet_v2, window 16 of 224, where the changed box spans the whole 14x14 and 7x7 stages
and most of the time goes there): convolutions run on channels-last patches (oneDNN runs
depthwise and 1x1 convolutions of small batches several times faster that way); a box
that spans at least ``EXPAND`` of an axis is widened to the whole axis, so that from
there on a copy is one ordinary tensor, convolved with its own padding, without gathers;
and a region that only needs the patch and the padding is one ``pad`` of the patch.

``approximate`` (Krypton's projective-field threshold ``tau``): the box of changed
positions is capped at ``tau`` times the layer's size per axis (centred on the change);
changes outside the cap are dropped. This is *not* exact; its error is measured by the
caller against the exact map.

Modules: :mod:`.patched` (the patched tensor and the per-image engine),
:mod:`.incremental_ops` (the operation handlers), this module (wiring both together and
making the occluded copies).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .incremental_ops import HANDLERS
from .patched import Engine, PatchTensor, gather
from .scoring import Build, batch_layout


def new_engine(tau: float | None = None) -> Engine:
    """An engine with every operation handler of :mod:`.incremental_ops`; ``tau`` < 1
    caps the changed box (approximate), ``None`` keeps the results exact."""
    return Engine(HANDLERS, tau)


def occluded_batch(engine: Engine, x: torch.Tensor, base: torch.Tensor,
                   starts: Sequence[Sequence[int]], window: Sequence[int]) -> PatchTensor:
    """``len(starts)`` occluded copies of one image ``x`` ``[1, C, *S]``: window ``p``
    starts at ``starts[p]`` (cut at the border) and holds ``base`` there.

    The clean activations are computed in the patches' layout (channels-last on a CPU):
    the same convolution kernels then compute both, so a position the window does not
    change holds bit for bit the clean value (with the clean image in another layout,
    oneDNN rounds differently there, and that noise differs from window to window). The
    converted input is the first entry of the engine's tape, so that every batch of one
    image uses the same tensor (the engine's caches are keyed on it)."""
    x = engine.clean("input", lambda: x.contiguous(memory_format=batch_layout(x)))
    spatial = x.shape[2:]
    lo = np.array(starts, dtype=np.int64).reshape(len(starts), len(spatial))
    hi = np.minimum(lo + np.array(window), np.array(spatial))
    start = np.minimum(lo, np.array(spatial) - np.array(window))
    patch = gather(x, start, window)
    fills = gather(base, start, window)
    inside = torch.ones((len(lo), 1, *window), dtype=torch.bool)
    for a, w in enumerate(window):
        rel = torch.from_numpy(start[:, a, None] + np.arange(w))
        shape = [len(lo), 1] + [1] * len(window)
        shape[2 + a] = w
        inside &= ((rel >= torch.from_numpy(lo[:, a, None])) &
                   (rel < torch.from_numpy(hi[:, a, None]))).reshape(shape)
    patch = torch.where(inside.to(x.device), fills, patch)
    return PatchTensor(engine, x, patch, start, lo, hi)


def builder(x: torch.Tensor, base: torch.Tensor, positions: Sequence[tuple[int, ...]],
            window: Sequence[int], tau: float | None) -> tuple[Build, Engine]:
    """A ``build(image, items)`` that makes the occluded copies of windows ``items`` of
    image ``image`` as patched tensors, and the engine that caches each image's clean
    activations (reset when the image changes)."""
    engine = new_engine(tau if tau is not None and tau < 1 else None)
    current = [-1]

    def build(image: int, items: Sequence[int]) -> PatchTensor:
        if image != current[0]:
            engine.reset()
            current[0] = image
        engine.pos = 0
        # at least two copies: a batch axis of 1 then marks input-independent tensors
        chosen = [positions[i] for i in items] * (2 if len(items) == 1 else 1)
        return occluded_batch(engine, x[image : image + 1], base[image : image + 1],
                              chosen, window)
    return build, engine
