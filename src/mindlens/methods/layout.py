"""Memory layout of the many-copies batches of path, noise and mask methods (integrated
gradients, smoothgrad, rise): channels-last on CPU, where oneDNN runs convolutional models
on such batches 1.3-2x faster, with the same results up to rounding (gradients of ReLU
networks can differ more where a pre-activation sits on a kink: ``channels_last=False``
runs the kernels of ordinary batches, for comparisons with other libraries); a model that
cannot take it (a ``.view`` on an activation) gets contiguous batches from then on."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

from .perturbation import batch_layout

T = TypeVar("T")

#: words of the errors a channels-last batch causes in models written for contiguous ones
LAYOUT_ERRORS = ("view size", "stride", "contiguous")


class Layout:
    """The layout for batches like ``x``; :meth:`call` falls back to contiguous once."""

    def __init__(self, x: torch.Tensor, channels_last: bool = True) -> None:
        self.format = batch_layout(x) if channels_last else torch.contiguous_format

    def call(self, fn: Callable[[torch.Tensor], T], batch: torch.Tensor) -> T:
        """``fn(batch)`` with ``batch`` in this layout; other errors are raised as they are."""
        if self.format == torch.contiguous_format:
            return fn(batch.contiguous())
        try:
            return fn(batch.contiguous(memory_format=self.format))
        except RuntimeError as err:
            if not any(w in str(err) for w in LAYOUT_ERRORS):
                raise
            self.format = torch.contiguous_format
            return fn(batch.contiguous())
