"""Patched tensors for incremental inference (:mod:`.incremental`): a
:class:`PatchTensor` stands for ``n`` perturbed copies of one activation, stored as the
clean activation plus, per copy, a patch over the box where that copy can differ from it;
an :class:`Engine` holds one image's cache of clean activations and the table of
operation handlers (:mod:`.incremental_ops`) that torch functions on patched tensors are
dispatched to. Operations without a handler (or whose handler declines) run on the
materialised copies, so results stay exact.

This module knows nothing of the handlers themselves: they come in through the engine, so
that :mod:`.incremental_ops` can build on :class:`PatchTensor` without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

#: a pending convolution: ``pending(None)`` is its output, ``pending((attr, scalars))``
#: its output through a fused activation (``None`` where fusing is not possible)
Pending = Callable[[tuple[str, list[float]] | None], Any]
#: ``handler(func, args, kwargs)``: the result of ``func`` on patched tensors, or
#: ``NotImplemented`` where the handler cannot keep it exact
Handler = Callable[[Callable[..., Any], Sequence[Any], dict[str, Any]], Any]


def op_name(func: Callable[..., Any]) -> str:
    """The name a torch function is dispatched by (``conv2d``, ``relu_``, ``__add__``)."""
    return getattr(func, "__name__", "")


class Engine:
    """Per-image state: the cache of clean activations in call order, counters, and the
    handlers by operation name (``handlers[op_name(func)]``; indexing is ``"getitem"``).
    ``tau`` < 1 is Krypton's projective-field cap (approximate; ``None``: exact)."""

    def __init__(self, handlers: dict[str, Handler], tau: float | None = None) -> None:
        self.handlers = handlers
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
    pass over the output instead of two; see ``fused`` in :mod:`.incremental_ops`).
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
        getattr(full, name)(*materialize(args), **dict(zip(kwargs, materialize(
            kwargs.values()), strict=True)))
        return self._assign(full)

    def __getitem__(self, index: Any) -> Any:
        handler = self.engine.handlers.get("getitem")
        out = NotImplemented if handler is None else handler(_getitem, (self, index), {})
        if out is NotImplemented:
            self.engine.fallbacks["getitem"] = self.engine.fallbacks.get("getitem", 0) + 1
            return self.full()[index]
        return out

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
        me = _first_patched((*args, *kwargs.values()))
        name = op_name(func)
        handler = me.engine.handlers.get(name)
        if handler is not None:
            out = handler(func, args, kwargs)
            if out is not NotImplemented:
                return out
        me.engine.fallbacks[name] = me.engine.fallbacks.get(name, 0) + 1
        return func(*materialize(args), **dict(zip(kwargs, materialize(kwargs.values()),
                                                    strict=True)))


def _first_patched(values: Sequence[Any]) -> PatchTensor:
    """The first patched tensor among ``values``, also inside lists and tuples (as in
    ``torch.cat([a, b])``)."""
    for v in values:
        if isinstance(v, PatchTensor):
            return v
        if isinstance(v, (list, tuple)):
            try:
                return _first_patched(v)
            except LookupError:
                continue
    raise LookupError("no patched tensor among the arguments")


def _getitem(x: Any, index: Any) -> Any:
    """What ``x[index]`` does (the function indexing is dispatched as)."""
    return x[index]


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


def materialize(values: Any) -> list[Any]:
    """``values`` with every patched tensor (also inside lists and tuples) turned into
    the ordinary tensor of its copies."""
    out = []
    for v in values:
        if isinstance(v, PatchTensor):
            v = v.full()
        elif isinstance(v, (list, tuple)):
            v = type(v)(materialize(v))
        out.append(v)
    return out
