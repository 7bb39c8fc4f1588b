"""What the perturbation methods (occlusion, area occlusion) share: the score that is
watched, the occluding value (baseline), and a memory-bounded loop that runs perturbed
copies of each image through the model and records how much the score dropped.

Only the model's outputs are used, so these methods run on any classifier, black boxes
and ONNX models included.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ... import progress
from ...errors import InputError
from ...model import Classifier, probabilities_of
from ...targets import Targets

SCORES = ("prob", "logit", "log_prob")
BASELINE_NAMES = ("zero", "mean", "blur")

#: ``fill(batch, image_index, item_indices)`` writes the baseline into each copy in place
Fill = Callable[[torch.Tensor, int, Sequence[int]], None]
#: ``build(image_index, item_indices)`` returns the model input for those perturbations
Build = Callable[[int, Sequence[int]], Any]


def check_image_or_volume(x: torch.Tensor, method: str) -> None:
    """Perturbation methods take ``[B, C, H, W]`` images or ``[B, C, D, H, W]`` volumes."""
    if x.dim() not in (4, 5):
        raise InputError(
            f"{method} takes [B, C, H, W] images or [B, C, D, H, W] volumes, got "
            f"{tuple(x.shape)}"
        )


def check_score(score: Any) -> None:
    if score not in SCORES:
        raise InputError(f"score must be one of {', '.join(SCORES)}, got {score!r}")


def check_baseline(baseline: Any) -> None:
    ok = (baseline in BASELINE_NAMES if isinstance(baseline, str) else
          isinstance(baseline, (int, float, torch.Tensor)) or callable(baseline))
    if not ok or isinstance(baseline, bool):
        raise InputError(
            f"baseline must be one of {', '.join(BASELINE_NAMES)}, a number (a pixel value "
            f"in [0, 1], e.g. 0.5 for grey), a model-space tensor or a callable x -> x_ref; "
            f"got {baseline!r}"
        )


def baseline_param(baseline: Any) -> Any:
    """The baseline as recorded in ``Explanation.params`` (a callable cannot be saved)."""
    if callable(baseline) and not isinstance(baseline, torch.Tensor):
        return f"callable {getattr(baseline, '__name__', type(baseline).__name__)}"
    return baseline


def check_batch_size(batch_size: Any) -> None:
    if batch_size is None:
        return
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(
            f"batch_size must be a positive integer or None (automatic), got {batch_size!r}")


#: on a CPU, batches of large images run slower per image than single images (the
#: activations fall out of the caches: mobilenet_v2 at 224x224 takes about 30 ms per image
#: alone and 40-100 ms per image in batches of 8-64), so the automatic batch size keeps
#: a batch's input under this many values; on a GPU batches of 64 are used.
CPU_BATCH_VALUES = 2**18


def auto_batch_size(batch_size: int | None, x: torch.Tensor, cap: int = 64) -> int:
    """``batch_size``, or the automatic choice for inputs like ``x`` on its device."""
    if batch_size is not None:
        return batch_size
    if x.device.type != "cpu":
        return cap
    return max(1, min(cap, CPU_BATCH_VALUES // max(1, x[0].numel())))


def class_scores(logits: torch.Tensor, classes: torch.Tensor, kind: str,
                 targets: Targets) -> torch.Tensor:
    """The watched score ``[n, T]``: probability (per the model's output kind, see
    :meth:`mindlens.Classifier.probabilities`), logit or log-probability of each target
    class; a callable target's own value when the target is a callable."""
    fn = targets.score_fn
    if fn is not None:
        return targets.scores(logits, classes)
    if kind == "prob":
        logits = probabilities_of(logits, targets.output)
    elif kind == "log_prob":
        logits = (logits.log_softmax(dim=1) if targets.output == "softmax"
                  else F.logsigmoid(logits))
    return logits.gather(1, classes)


def gaussian_blur(x: torch.Tensor, sigma: Sequence[float]) -> torch.Tensor:
    """Separable Gaussian blur over the spatial axes of ``[B, C, *spatial]`` (reflect
    padding, kernel radius ``ceil(3 sigma)``, clipped so that it fits the image)."""
    out = x
    spatial = x.dim() - 2
    for axis, s in enumerate(sigma):
        size = x.shape[2 + axis]
        radius = min(math.ceil(3 * s), size - 1)
        if s <= 0 or radius < 1:
            continue
        t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        kernel = torch.exp(-0.5 * (t / s) ** 2)
        kernel = kernel / kernel.sum()
        moved = out.movedim(2 + axis, -1)
        shape = moved.shape
        flat = moved.reshape(-1, 1, size)
        flat = F.pad(flat, (radius, radius), mode="reflect")
        flat = F.conv1d(flat, kernel.view(1, 1, -1))
        out = flat.reshape(shape).movedim(-1, 2 + axis)
    assert out.dim() == spatial + 2
    return out


def resolve_baseline(baseline: Any, clf: Classifier, x: torch.Tensor,
                     blur_sigma: Sequence[float]) -> torch.Tensor:
    """The occluding values, a model-space tensor shaped like ``x``.

    - ``"zero"``: 0 in model space (the dataset mean colour for mean/std-normalised models);
    - ``"mean"``: each image's own mean per channel;
    - ``"blur"``: the image blurred with a Gaussian of ``blur_sigma`` pixels per axis;
    - a number: a constant *pixel* value in [0, 1] (e.g. 0.5 = grey), normalised per channel;
    - a tensor: model-space values broadcastable to ``x``;
    - a callable ``x -> x_ref``.
    """
    if isinstance(baseline, str):
        if baseline == "zero":
            return torch.zeros_like(x)
        if baseline == "mean":
            return x.mean(dim=tuple(range(2, x.dim())), keepdim=True).expand_as(x).clone()
        return gaussian_blur(x, blur_sigma)
    if isinstance(baseline, (int, float)):
        return clf.spec.normalize(torch.full_like(x, float(baseline)))
    ref = baseline(x) if callable(baseline) and not isinstance(baseline, torch.Tensor) \
        else baseline
    if not isinstance(ref, torch.Tensor):
        raise InputError(f"the baseline callable returned {type(ref).__name__}, not a tensor")
    try:
        return torch.broadcast_to(ref.to(device=x.device, dtype=x.dtype), x.shape).clone()
    except RuntimeError:
        raise InputError(
            f"the baseline tensor has shape {tuple(ref.shape)}, which does not broadcast to "
            f"the input {tuple(x.shape)}; give [C, *spatial], [B, C, *spatial] or a "
            f"per-channel [1, C, 1, 1] tensor in model space"
        ) from None


@dataclass
class Drops:
    """Score drops ``s0 - s(perturbed)`` ``[B, T, N]`` for ``N`` perturbations per image.

    ``forwards`` counts model evaluations per image (``N + 1``, as in the cost tables of
    the spec); ``calls`` counts the batched ``forward()`` calls actually made.
    """

    drops: torch.Tensor
    logits: torch.Tensor
    classes: torch.Tensor
    clean: torch.Tensor
    forwards: int
    calls: int


def score_drops(clf: Classifier, x: torch.Tensor, targets: Targets, kind: str,
                n_items: int | Sequence[int], fill: Fill, batch_size: int,
                build: Build | None = None, logits: torch.Tensor | None = None) -> Drops:
    """Run ``n_items`` perturbed copies of every image (one count for all, or one per
    image) through the model, ``batch_size`` copies per forward pass, under
    ``torch.inference_mode`` in eval mode.

    Each copy starts as the clean image; ``fill`` writes the baseline into it. All targets
    of an image come from the same passes. The result does not depend on the chunking.
    With counts per image, ``drops`` is NaN past each image's own count. ``build(image,
    items)``, if given, makes the perturbed batch itself (e.g. incremental inference).
    ``logits``, if given, are the clean logits of an earlier call on the same model and
    input: the clean pass is not run again (and not counted).
    """
    counts = [n_items] * x.shape[0] if isinstance(n_items, int) else list(n_items)
    b = x.shape[0]
    with clf.patched(), torch.inference_mode():
        layout = [batch_layout(x)]
        clean_passes = calls = 0 if logits is not None else 1
        if logits is None:
            # the clean pass in the perturbed batches' layout: the same kernels round alike
            logits = _forward(clf, x.contiguous(memory_format=layout[0]), layout)
        classes = targets.resolve(logits)
        clean = class_scores(logits, classes, kind, targets)
        n_t = classes.shape[1]
        drops = torch.full((b, n_t, max(counts, default=0)), math.nan, dtype=clean.dtype,
                           device=clean.device)
        for i, count in enumerate(counts):
            # chunks of (nearly) equal size: as many passes as batch_size needs, but no
            # small last pass that costs a whole pass's overhead for a few copies
            step = math.ceil(count / math.ceil(count / batch_size)) if count else 1
            for start in range(0, count, step):
                items = range(start, min(start + step, count))
                if build is not None:
                    out = clf(build(i, items))[: len(items)]
                else:
                    batch = x[i : i + 1].expand(len(items), *x.shape[1:]).clone(
                        memory_format=layout[0])
                    fill(batch, i, items)
                    out = _forward(clf, batch, layout)
                calls += 1
                progress.tick(len(items))
                cls = classes[i : i + 1].expand(len(items), n_t)
                drops[i, :, start : start + len(items)] = (
                    clean[i : i + 1] - class_scores(out, cls, kind, targets)).T
    # leave inference mode: callers may use the results with autograd later
    return Drops(drops.clone(), logits.clone(), classes.clone(), clean.clone(),
                 max(counts, default=0) + clean_passes, calls)


def batch_layout(x: torch.Tensor) -> torch.memory_format:
    """Channels-last for image and volume batches on CPU: convolutional models run about
    twice as fast on perturbed batches in that layout (oneDNN), with the same results up
    to rounding. Incremental inference keeps its patches in it too."""
    if x.device.type != "cpu" or x.dim() not in (4, 5):
        return torch.contiguous_format
    return torch.channels_last if x.dim() == 4 else torch.channels_last_3d


def _forward(clf: Classifier, batch: torch.Tensor, layout: list[torch.memory_format]
             ) -> torch.Tensor:
    """``clf(batch)``; a model that cannot take a channels-last batch (``.view`` on an
    activation, for instance) gets ordinary contiguous batches from then on."""
    if layout[0] == torch.contiguous_format:
        return clf(batch)
    try:
        return clf(batch)
    except RuntimeError:
        layout[0] = torch.contiguous_format
        return clf(batch.contiguous())
