"""Bounded memory: a batch is explained in chunks of at most ``max_batch`` images.

Memory of a method grows with the batch (activations, gradients, perturbed copies), so
:meth:`mindlens.methods.Method.explain` splits a large batch into chunks, runs the method on
each and joins the results; a batch of 256 images at 224 px then peaks at about the memory
of one chunk. The default chunk follows the input size (:func:`default_max_batch`): a budget
of :data:`CHUNK_BUDGET` bytes divided by an estimate of one image's working memory
(:data:`ACTIVATION_FACTOR` times the bytes of its input tensor: a ResNet-50 backward pass at
224 px keeps about 55 MB per image, about 90 times its 0.6 MB input). Maps do not depend on
the chunking: every method explains each image independently; a method that seeds per
image (SmoothGrad) reads the chunk's position in the whole batch from :func:`offset`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any

import torch

from ..errors import InputError
from ..explanation import Cost, Explanation
from ..targets import Targets

#: bytes one chunk may use for the method's working memory (activations, gradients, copies)
CHUNK_BUDGET = 512 * 2**20
#: working memory of one image, in multiples of its input tensor's bytes
ACTIVATION_FACTOR = 96
#: the index, in the batch given to ``explain``, of the first image of the running chunk
_OFFSET: ContextVar[int] = ContextVar("mindlens_chunk_offset", default=0)


def offset() -> int:
    """Where the chunk being explained starts in the caller's batch (0 without chunking),
    per thread: per-image seeds stay those of the image, however the batch was split."""
    return _OFFSET.get()


def default_max_batch(x: torch.Tensor) -> int:
    """Images per chunk for a batch ``x``: :data:`CHUNK_BUDGET` over one image's estimate."""
    per_image = max(1, x[0].numel() * x.element_size() * ACTIVATION_FACTOR)
    return max(1, CHUNK_BUDGET // per_image)


def check_max_batch(value: Any) -> int | None:
    """``None`` (the default from the input size) or a positive integer."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"max_batch must be a positive integer (images per chunk) or None "
                         f"(chosen from the input size), got {value!r}")
    return value


def run_in_chunks(run: Callable[[torch.Tensor, Targets], Explanation], x: torch.Tensor,
                  targets: Targets, size: int) -> Explanation:
    """``run`` on consecutive chunks of ``size`` images of ``x``, joined into one
    explanation. Each chunk's maps (and ``raw``) are copied into the result as soon as the
    chunk is done and released, so the result is never held twice."""
    b = x.shape[0]
    parts: list[Explanation] = []
    sizes: list[int] = []
    maps: torch.Tensor | None = None
    raw: torch.Tensor | None = None
    for start in range(0, b, size):
        token = _OFFSET.set(start)
        try:
            part = run(x[start:start + size], targets.split(b, start, start + size))
        finally:
            _OFFSET.reset(token)
        n = part.batch_size
        if maps is None:
            maps = part.maps.new_empty((b, *part.maps.shape[1:]))
            if part.raw is not None:
                raw = part.raw.new_empty((b, *part.raw.shape[1:]))
        maps[start:start + n] = part.maps
        if raw is not None and part.raw is not None:
            raw[start:start + n] = part.raw
        part.maps, part.raw = part.maps[:0], None
        parts.append(part)
        sizes.append(n)
    assert maps is not None
    return merge(parts, sizes, maps, raw)


def merge(parts: Sequence[Explanation], sizes: list[int], maps: torch.Tensor,
          raw: torch.Tensor | None) -> Explanation:
    """One explanation from the chunks of a batch (their ``sizes``), with the joined
    ``maps`` and ``raw``."""
    first = parts[0]
    return Explanation(
        method=first.method, maps=maps,
        targets=torch.cat([p.targets for p in parts]),
        scores=torch.cat([p.scores for p in parts]),
        probs=torch.cat([p.probs for p in parts]), signed=first.signed,
        params=dict(first.params), native_shape=first.native_shape,
        cost=Cost(forward=sum(p.cost.forward for p in parts),
                  backward=sum(p.cost.backward for p in parts)),
        raw=raw, extras=_merge_values([p.extras for p in parts], sizes),
        logits=(torch.cat([p.logits for p in parts])
                if all(p.logits is not None for p in parts) else None),
    )


def _merge_values(values: list[Any], sizes: list[int]) -> Any:
    """Join one extras value across chunks: per-image tensors and lists are concatenated,
    dicts merged key by key, counts summed, other floats (errors, bounds) take the largest;
    a value equal in every chunk is kept as it is."""
    v0 = values[0]
    if isinstance(v0, torch.Tensor):
        if all(isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n
               for v, n in zip(values, sizes, strict=True)):
            return torch.cat(values)
        return v0
    if isinstance(v0, list) and all(isinstance(v, list) and len(v) == n
                                    for v, n in zip(values, sizes, strict=True)):
        return [item for v in values for item in v]
    if isinstance(v0, dict) and all(isinstance(v, dict) and v.keys() == v0.keys()
                                    for v in values):
        return {k: _merge_values([v[k] for v in values], sizes) for k in v0}
    try:
        if all(v == v0 for v in values[1:]):
            return v0
    except (RuntimeError, ValueError, TypeError):  # values without a plain ==
        return v0
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return sum(values)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return max(values)
    return v0
