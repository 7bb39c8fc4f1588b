"""Incremental inference for occlusion, in the spirit of Krypton (Nakandala, Kumar,
Papakonstantinou, SIGMOD 2019, "Incremental and Approximate Inference for Faster
Occlusion-based Deep CNN Explanations"): an occluded copy differs from the clean image only
inside the window, so each layer only needs recomputing where that change can reach.

How it works here: the model's own Python ``forward`` runs on a :class:`PatchTensor`, a
tensor-like object (``__torch_function__`` protocol) that stands for ``n`` occluded copies
of one image. It holds the clean activation ``[1, C, *S]`` (computed once per image and
cached by call order), and per copy only a *patch*: the exact values of that copy inside a
box that contains every position where the copy can differ from the clean activation.

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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .scoring import batch_layout

_UNARY_NAMES = {
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "sigmoid", "tanh", "silu", "gelu",
    "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "celu", "hardswish", "hardsigmoid",
    "mish", "softplus", "clamp", "clamp_", "clip", "clamp_min", "clamp_max", "batch_norm",
    "dropout", "neg", "abs", "exp", "square", "sqrt", "prelu",
}
_BINARY_NAMES = {"add", "sub", "mul", "div", "maximum", "minimum", "__add__", "__radd__",
                 "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "add_", "mul_"}
_WINDOWED = {"conv1d", "conv2d", "conv3d", "max_pool1d", "max_pool2d", "max_pool3d",
             "_max_pool1d", "_max_pool2d", "_max_pool3d", "avg_pool1d", "avg_pool2d",
             "avg_pool3d"}


#: a pending convolution: ``pending(None)`` is its output, ``pending((attr, scalars))``
#: its output through a fused activation (``None`` where fusing is not possible)
Pending = Callable[[tuple[str, list[float]] | None], Any]


def _name(func: Callable[..., Any]) -> str:
    return getattr(func, "__name__", "")


class Engine:
    """Per-image state: the cache of clean activations in call order, and counters."""

    def __init__(self, tau: float | None = None) -> None:
        self.tau = tau
        self.tape: list[tuple[str, torch.Tensor]] = []
        self.pos = 0
        self.fallbacks: dict[str, int] = {}
        #: per clean activation and padding: (activation, rows buffer, clean rows)
        self.rows: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor, int]] = {}

    def reset(self) -> None:
        self.tape = []
        self.rows = {}
        self.pos = 0

    def clean(self, name: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The clean output of the next operation, computed once per image."""
        i = self.pos
        self.pos += 1
        if i < len(self.tape) and self.tape[i][0] == name:
            return self.tape[i][1]
        value = compute()
        del self.tape[i:]
        self.tape.append((name, value))
        return value


class PatchTensor:
    """``n`` perturbed copies of one activation, stored as clean activation + patches.

    ``lo``/``hi`` ``[n, d]``: per copy, the box ``[lo, hi)`` outside which it equals the
    clean activation; ``start`` ``[n, d]``: where ``patch`` ``[n, C, *size]`` sits.

    A convolution's patch may be *pending*: ``pending(activation)`` computes it on first
    use, so that a ReLU or ReLU6 applied next can run fused into the convolution (one
    pass over the output instead of two; see :func:`~.incremental_ops.fused`).
    """

    def __init__(self, engine: Engine, clean: torch.Tensor, patch: torch.Tensor | None,
                 start: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                 pending: Pending | None = None, size: Sequence[int] | None = None) -> None:
        self.engine, self.clean, self._patch, self.pending = engine, clean, patch, pending
        self.start, self.lo, self.hi = start, lo, hi
        self.psize = tuple(size) if patch is None else tuple(patch.shape[2:])

    @property
    def patch(self) -> torch.Tensor:
        if self._patch is None:
            self._patch = self.pending(None)
            self.pending = None
        return self._patch

    # -- tensor-like surface -------------------------------------------------------------
    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.start.shape[0], *self.clean.shape[1:]))

    @property
    def dtype(self) -> torch.dtype:
        return self.clean.dtype

    @property
    def device(self) -> torch.device:
        return self.clean.device

    @property
    def ndim(self) -> int:
        return self.clean.dim()

    def dim(self) -> int:
        return self.clean.dim()

    def size(self, dim: int | None = None) -> Any:
        return self.shape if dim is None else self.shape[dim]

    def is_floating_point(self) -> bool:
        return self.clean.is_floating_point()

    def contiguous(self, *args: Any, **kwargs: Any) -> PatchTensor:
        return self

    def __len__(self) -> int:
        return self.start.shape[0]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if name.endswith("_") and not name.startswith("_"):
            # an in-place method (``y.mul_(z)``): run it on the materialised copies and
            # take the result over, so that this object really changes
            return lambda *a, **k: self._inplace(name, a, k)
        if name == "view":  # needs a contiguous tensor; the copies are channels-last
            return self.full().contiguous().view
        method = getattr(torch.Tensor, name, None)
        if callable(method):  # ``y.relu()``, ``y.reshape(n, -1)``: as the functions do
            return lambda *a, **k: PatchTensor.__torch_function__(method, (PatchTensor,),
                                                                  (self, *a), k)
        return getattr(self.full(), name)

    def _inplace(self, name: str, args: Any, kwargs: Any) -> PatchTensor:
        self.engine.fallbacks[name] = self.engine.fallbacks.get(name, 0) + 1
        full = self.full()
        getattr(full, name)(*_materialize(args), **dict(zip(kwargs, _materialize(
            kwargs.values()), strict=True)))
        return self._assign(full)

    def __getitem__(self, index: Any) -> Any:
        from .incremental_ops import getitem

        return getitem(self, index)

    def __add__(self, other: Any) -> Any:
        return torch.add(self, other)

    def __radd__(self, other: Any) -> Any:
        return torch.add(other, self)

    def __iadd__(self, other: Any) -> Any:
        return self._assign(torch.add(self, other))

    def __sub__(self, other: Any) -> Any:
        return torch.sub(self, other)

    def __rsub__(self, other: Any) -> Any:
        return torch.sub(other, self)

    def __mul__(self, other: Any) -> Any:
        return torch.mul(self, other)

    def __rmul__(self, other: Any) -> Any:
        return torch.mul(other, self)

    def __imul__(self, other: Any) -> Any:
        return self._assign(torch.mul(self, other))

    def __truediv__(self, other: Any) -> Any:
        return torch.div(self, other)

    def __neg__(self) -> Any:
        return torch.neg(self)

    def _assign(self, other: Any) -> Any:
        """In-place operations: mirror them by rebinding this object's contents. An
        ordinary tensor of the copies ``[n, C, *S]`` becomes a patch over the whole map."""
        if isinstance(other, PatchTensor):
            self.clean, self._patch, self.pending = other.clean, other._patch, other.pending
            self.start, self.lo, self.hi, self.psize = other.start, other.lo, other.hi, \
                other.psize
            return self
        if isinstance(other, torch.Tensor) and tuple(other.shape) == tuple(self.shape):
            spatial = np.array(self.clean.shape[2:])
            n = len(self)
            self._patch, self.pending = other, None
            self.start = np.zeros((n, len(spatial)), dtype=np.int64)
            self.lo, self.hi = self.start.copy(), np.tile(spatial, (n, 1))
            self.psize = tuple(other.shape[2:])
            return self
        return other

    # -- conversion ----------------------------------------------------------------------
    def full(self) -> torch.Tensor:
        """The ordinary tensor ``[n, C, *S]``."""
        n, d = self.start.shape[0], self.clean.dim() - 2
        return self.region(np.zeros((n, d), dtype=np.int64), self.clean.shape[2:])

    def region(self, r0: np.ndarray, size: Sequence[int], fill: float = 0.0) -> torch.Tensor:
        """Values of every copy in the box ``[r0, r0 + size)`` (may reach outside the
        tensor: filled with ``fill``), ``[n, C, *size]``, channels-last on CPU."""
        if tuple(size) == self.psize and np.array_equal(r0, self.start):
            return self.patch
        psize = np.array(self.psize)
        spatial = np.array(self.clean.shape[2:])
        r1 = r0 + np.array(size)
        off = r0 - self.start
        if (off == off[0]).all() and (np.maximum(r0, 0) >= self.start).all() and \
                (np.minimum(r1, spatial) <= self.start + psize).all():
            # every position the box needs is in the patch or outside the tensor, at the
            # same offset for every copy (e.g. a patch that covers the whole feature map):
            # one pad/crop of the patch, no gather
            pads: list[int] = []
            for k in reversed(range(len(size))):
                pads += [int(-off[0, k]), int(off[0, k] + size[k] - psize[k])]
            return F.pad(self.patch, pads, value=fill)
        return _assemble(self.engine, self.clean, self.patch, self.start, r0, size, fill)

    # -- dispatch ------------------------------------------------------------------------
    @classmethod
    def __torch_function__(cls, func: Callable[..., Any], types: Any, args: Sequence[Any] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        pts = [a for a in (*args, *kwargs.values()) if isinstance(a, PatchTensor)]
        name = _name(func)
        me = pts[0]
        from . import incremental_ops as ops

        handler = None
        if name in _UNARY_NAMES and len(pts) == 1 and isinstance(args[0], PatchTensor):
            handler = ops.unary
        elif name in _BINARY_NAMES:
            handler = ops.binary
        elif name in _WINDOWED and isinstance(args[0], PatchTensor) and len(pts) == 1:
            handler = ops.windowed
        elif name in ("pad", "constant_pad_nd") and isinstance(args[0], PatchTensor):
            handler = ops.pad
        if handler is not None:
            out = handler(func, args, kwargs)
            if out is not NotImplemented:
                return out
        me.engine.fallbacks[name] = me.engine.fallbacks.get(name, 0) + 1
        return func(*_materialize(args), **dict(zip(kwargs, _materialize(kwargs.values()),
                                                     strict=True)))


def gather(clean: torch.Tensor, r0: np.ndarray, size: Sequence[int], fill: float = 0.0
           ) -> torch.Tensor:
    """Boxes ``[r0[i], r0[i] + size)`` of ``clean`` ``[1, C, *S]`` -> ``[n, C, *size]``
    (channels-last on CPU); positions outside the tensor hold ``fill``."""
    return _assemble(None, clean, None, None, r0, size, fill)


def _assemble(engine: Engine | None, clean: torch.Tensor, patch: torch.Tensor | None,
              start: np.ndarray | None, r0: np.ndarray, size: Sequence[int], fill: float
              ) -> torch.Tensor:
    """One indexed copy for all copies at once: the box ``[r0[i], r0[i] + size)`` of copy
    ``i``, taken from its patch (box ``[start[i], start[i] + patch size)``) where the patch
    covers it, from the clean activation elsewhere, and ``fill`` outside the tensor.

    The clean activation (padded with ``fill`` as far as any box reaches) and the patches
    are rows of ``C`` values in one buffer (:func:`_rows`); each output position picks
    one row."""
    d, n = len(size), r0.shape[0]
    spatial = clean.shape[2:]
    pad_lo = [max(0, -int(r0[:, a].min())) for a in range(d)]
    pad_hi = [max(0, int((r0[:, a] + size[a]).max()) - spatial[a]) for a in range(d)]
    prows = None if patch is None else patch.movedim(1, -1).reshape(-1, clean.shape[1])
    rows, n_clean = _rows(engine, clean, pad_lo, pad_hi, fill,
                          0 if prows is None else prows.shape[0])
    padded = [s + lo + hi for s, lo, hi in zip(spatial, pad_lo, pad_hi, strict=True)]
    # per axis: the coordinate of every box position, [n, size_a]
    coords = [r0[:, a, None] + np.arange(size[a]) for a in range(d)]
    index = np.zeros((n, *size), dtype=np.int64)
    for a in range(d):
        shape = [n] + [1] * d
        shape[1 + a] = size[a]
        stride = int(np.prod(padded[a + 1 :], dtype=np.int64))
        index += ((coords[a] + pad_lo[a]) * stride).reshape(shape)
    if prows is not None and patch is not None and start is not None:
        psize = patch.shape[2:]
        inside = np.ones((n, *size), dtype=bool)
        pindex = (np.arange(n) * int(np.prod(psize))).reshape([n] + [1] * d)
        for a in range(d):
            shape = [n] + [1] * d
            shape[1 + a] = size[a]
            rel = coords[a] - start[:, a, None]
            inside &= ((rel >= 0) & (rel < psize[a])).reshape(shape)
            pindex = pindex + (np.clip(rel, 0, psize[a] - 1) *
                               int(np.prod(psize[a + 1 :], dtype=np.int64))).reshape(shape)
        index = np.where(inside, n_clean + pindex, index)
        rows[n_clean : n_clean + prows.shape[0]] = prows
    out = torch.index_select(rows, 0, torch.from_numpy(index.reshape(-1)).to(clean.device))
    return out.view(n, *size, clean.shape[1]).movedim(-1, 1)


def _rows(engine: Engine | None, clean: torch.Tensor, pad_lo: list[int], pad_hi: list[int],
          fill: float, room: int) -> tuple[torch.Tensor, int]:
    """``clean`` ``[1, C, *S]`` padded with ``fill`` as rows ``[positions, C]``, followed
    by ``room`` free rows for the patches; and the number of clean rows. The engine keeps
    the buffer per activation and padding (holding ``clean`` keeps its id unique), so a
    call only writes its patch rows."""
    key = (id(clean), tuple(pad_lo), tuple(pad_hi), fill)
    if engine is not None and key in engine.rows:
        _, buf, n_clean = engine.rows[key]
        if buf.shape[0] >= n_clean + room:
            return buf, n_clean
    src = clean[0]
    if any(pad_lo) or any(pad_hi):
        pads: list[int] = []
        for lo, hi in zip(reversed(pad_lo), reversed(pad_hi), strict=True):
            pads += [lo, hi]
        src = F.pad(src, pads, value=fill)
    rows = src.movedim(0, -1).reshape(-1, clean.shape[1])
    n_clean = rows.shape[0]
    if room:
        buf = torch.empty((n_clean + room, rows.shape[1]), dtype=rows.dtype,
                          device=rows.device)
        buf[:n_clean] = rows
        rows = buf
    if engine is not None:
        engine.rows[key] = (clean, rows, n_clean)
    return rows, n_clean


def _materialize(values: Any) -> list[Any]:
    out = []
    for v in values:
        if isinstance(v, PatchTensor):
            v = v.full()
        elif isinstance(v, (list, tuple)):
            v = type(v)(_materialize(v))
        out.append(v)
    return out


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
