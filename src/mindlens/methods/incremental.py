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

``approximate`` (Krypton's projective-field threshold ``tau``): the box of changed
positions is capped at ``tau`` times the layer's size per axis (centred on the change);
changes outside the cap are dropped. This is *not* exact; its error is measured by the
caller against the exact map.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

_UNARY_NAMES = {
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "sigmoid", "tanh", "silu", "gelu",
    "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "celu", "hardswish", "hardsigmoid",
    "mish", "softplus", "clamp", "clamp_", "clip", "clamp_min", "clamp_max", "batch_norm",
    "dropout", "neg", "abs", "exp", "square", "sqrt", "prelu",
}
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_MAX_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
             "return_indices")
_AVG_ARGS = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
             "divisor_override")
_BINARY_NAMES = {"add", "sub", "mul", "div", "maximum", "minimum", "__add__", "__radd__",
                 "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "add_", "mul_"}
_WINDOWED = {"conv1d", "conv2d", "conv3d", "max_pool1d", "max_pool2d", "max_pool3d",
             "_max_pool1d", "_max_pool2d", "_max_pool3d", "avg_pool1d", "avg_pool2d",
             "avg_pool3d"}


def _name(func: Callable[..., Any]) -> str:
    return getattr(func, "__name__", "")


class Engine:
    """Per-image state: the cache of clean activations in call order, and counters."""

    def __init__(self, tau: float | None = None) -> None:
        self.tau = tau
        self.tape: list[tuple[str, torch.Tensor]] = []
        self.pos = 0
        self.fallbacks: dict[str, int] = {}

    def reset(self) -> None:
        self.tape = []
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
    """

    def __init__(self, engine: Engine, clean: torch.Tensor, patch: torch.Tensor,
                 start: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        self.engine, self.clean, self.patch = engine, clean, patch
        self.start, self.lo, self.hi = start, lo, hi

    # -- tensor-like surface -------------------------------------------------------------
    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.patch.shape[0], *self.clean.shape[1:]))

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
        return self.patch.shape[0]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        fn = getattr(torch, name, None)
        if callable(fn):
            return lambda *a, **k: fn(self, *a, **k)
        return getattr(self.full(), name)

    def __getitem__(self, index: Any) -> Any:
        return _getitem(self, index)

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
        """In-place operations: mirror them by rebinding this object's contents."""
        if isinstance(other, PatchTensor):
            self.clean, self.patch = other.clean, other.patch
            self.start, self.lo, self.hi = other.start, other.lo, other.hi
            return self
        return other

    # -- conversion ----------------------------------------------------------------------
    def full(self) -> torch.Tensor:
        """The ordinary tensor ``[n, C, *S]``."""
        n = self.patch.shape[0]
        out = self.clean.expand(n, *self.clean.shape[1:]).clone()
        size = self.patch.shape[2:]
        for i in range(n):
            sl = tuple(slice(int(s), int(s) + k) for s, k in zip(self.start[i], size,
                                                                  strict=True))
            out[(i, slice(None), *sl)] = self.patch[i]
        return out

    def region(self, r0: np.ndarray, size: Sequence[int], fill: float = 0.0) -> torch.Tensor:
        """Values of every copy in the box ``[r0, r0 + size)`` (may reach outside the
        tensor: filled with ``fill``), ``[n, C, *size]``."""
        if tuple(size) == tuple(self.patch.shape[2:]) and np.array_equal(r0, self.start):
            return self.patch
        out = gather(self.clean, r0, size, fill)
        psize = np.array(self.patch.shape[2:])
        a0 = np.maximum(self.start, r0)
        a1 = np.minimum(self.start + psize, r0 + np.array(size))
        keep = (a1 > a0).all(axis=1)
        src0, dst0, length = (a0 - self.start).tolist(), (a0 - r0).tolist(), (a1 - a0).tolist()
        for i in np.flatnonzero(keep).tolist():
            src = tuple(slice(b, b + k) for b, k in zip(src0[i], length[i], strict=True))
            dst = tuple(slice(b, b + k) for b, k in zip(dst0[i], length[i], strict=True))
            out[(i, slice(None), *dst)] = self.patch[(i, slice(None), *src)]
        return out

    # -- dispatch ------------------------------------------------------------------------
    @classmethod
    def __torch_function__(cls, func: Callable[..., Any], types: Any, args: Sequence[Any] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        pts = [a for a in (*args, *kwargs.values()) if isinstance(a, PatchTensor)]
        name = _name(func)
        me = pts[0]
        handler = None
        if name in _UNARY_NAMES and len(pts) == 1 and isinstance(args[0], PatchTensor):
            handler = _unary
        elif name in _BINARY_NAMES:
            handler = _binary
        elif name in _WINDOWED and isinstance(args[0], PatchTensor) and len(pts) == 1:
            handler = _windowed
        elif name in ("pad", "constant_pad_nd") and isinstance(args[0], PatchTensor):
            handler = _pad
        if handler is not None:
            out = handler(func, args, kwargs)
            if out is not NotImplemented:
                return out
        me.engine.fallbacks[name] = me.engine.fallbacks.get(name, 0) + 1
        return func(*_materialize(args), **dict(zip(kwargs, _materialize(kwargs.values()),
                                                     strict=True)))


def gather(clean: torch.Tensor, r0: np.ndarray, size: Sequence[int], fill: float = 0.0
           ) -> torch.Tensor:
    """Boxes ``[r0[i], r0[i] + size)`` of ``clean`` ``[1, C, *S]`` -> ``[n, C, *size]``;
    positions outside the tensor hold ``fill``."""
    d = len(size)
    spatial = clean.shape[2:]
    pad_lo = [max(0, -int(r0[:, a].min())) for a in range(d)]
    pad_hi = [max(0, int((r0[:, a] + size[a]).max()) - spatial[a]) for a in range(d)]
    src = clean[0]
    if any(pad_lo) or any(pad_hi):
        pads: list[int] = []
        for a in reversed(range(d)):
            pads += [pad_lo[a], pad_hi[a]]
        src = F.pad(src, pads, value=fill)
    starts = (r0 + np.array(pad_lo)).tolist()
    return torch.stack([src[(slice(None), *(slice(b, b + k) for b, k in zip(row, size,
                                                                          strict=True)))]
                        for row in starts])


def _materialize(values: Any) -> list[Any]:
    out = []
    for v in values:
        if isinstance(v, PatchTensor):
            v = v.full()
        elif isinstance(v, (list, tuple)):
            v = type(v)(_materialize(v))
        out.append(v)
    return out


def _bind(func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]
          ) -> inspect.BoundArguments | None:
    try:
        return inspect.signature(func).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return None


def _out_of_place(func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]
                  ) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], bool]:
    """Turn ``relu_`` / ``inplace=True`` into the out-of-place call; say if it was in place."""
    name = _name(func)
    inplace = False
    if name.endswith("_") and not name.endswith("__"):
        alt = getattr(torch, name[:-1], None)
        if alt is None:
            return func, tuple(args), kwargs, False
        func, inplace = alt, True
    bound = _bind(func, args, kwargs)
    if bound is not None and bound.arguments.get("inplace"):
        bound.arguments["inplace"] = False
        return func, tuple(bound.args), dict(bound.kwargs), True
    return func, tuple(args), kwargs, inplace


def _unary(func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    x: PatchTensor = args[0]
    if _name(func) == "batch_norm":
        bound = _bind(func, args, kwargs)
        if bound is None or bound.arguments.get("training"):
            return NotImplemented
    if _name(func) == "dropout":
        bound = _bind(func, args, kwargs)
        if bound is None or bound.arguments.get("training", True):
            return NotImplemented
    extra = [a for a in (*args[1:], *kwargs.values()) if isinstance(a, torch.Tensor)]
    if _name(func) in ("batch_norm", "prelu"):  # per-channel parameters
        if any(a.dim() > 1 for a in extra):
            return NotImplemented
    elif any(_varies(a, x) for a in extra):
        return NotImplemented
    fn, full_args, kw, inplace = _out_of_place(func, args, kwargs)
    rest = full_args[1:]
    clean = x.engine.clean(_name(fn), lambda: fn(x.clean, *rest, **kw))
    out = PatchTensor(x.engine, clean, fn(x.patch, *rest, **kw), x.start, x.lo, x.hi)
    return x._assign(out) if inplace else out


def _varies(value: Any, x: PatchTensor) -> bool:
    """A second operand the patch trick cannot use: one with spatial extent (its trailing
    axes, as broadcasting aligns them, are not all 1), or one that differs between the
    copies (batch axis > 1, e.g. squeeze-and-excitation gates computed from copies that
    were already materialised). Copies always come in batches of at least two, so a batch
    axis of 1 means the operand does not depend on the input."""
    if not isinstance(value, torch.Tensor):
        return False
    d = x.ndim - 2
    if any(s != 1 for s in value.shape[max(0, value.dim() - d):]):
        return True
    return value.dim() == x.ndim and value.shape[0] != 1


def _union(a: PatchTensor, b: PatchTensor) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                      list[int]]:
    lo, hi = np.minimum(a.lo, b.lo), np.maximum(a.hi, b.hi)
    for x in (a, b):  # reuse one operand's box when it holds every change of both
        size = list(x.patch.shape[2:])
        if (x.start <= lo).all() and (x.start + np.array(size) >= hi).all():
            return lo, hi, x.start, size
    spatial = a.clean.shape[2:]
    size = [max(1, int((hi - lo)[:, k].max())) for k in range(lo.shape[1])]
    start = np.stack([np.clip(lo[:, k], 0, spatial[k] - size[k]) for k in range(len(size))],
                     axis=1)
    return lo, hi, start, size


def _binary(func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    fn, args, kwargs, inplace = _out_of_place(func, args, kwargs)
    if len(args) < 2:
        return NotImplemented
    a, b = args[0], args[1]
    rest = tuple(args[2:])
    if isinstance(a, PatchTensor) and isinstance(b, PatchTensor):
        if a.clean.shape != b.clean.shape or a.patch.shape[0] != b.patch.shape[0]:
            return NotImplemented
        lo, hi, start, size = _union(a, b)
        pa, pb = a.region(start, size), b.region(start, size)
        clean = a.engine.clean(_name(fn), lambda: fn(a.clean, b.clean, *rest, **kwargs))
        out = PatchTensor(a.engine, clean, fn(pa, pb, *rest, **kwargs), start, lo, hi)
    else:
        x = a if isinstance(a, PatchTensor) else b
        other = b if x is a else a
        if _varies(other, x):
            return NotImplemented
        if x is a:
            clean = x.engine.clean(_name(fn), lambda: fn(x.clean, other, *rest, **kwargs))
            patch = fn(x.patch, other, *rest, **kwargs)
        else:
            clean = x.engine.clean(_name(fn), lambda: fn(other, x.clean, *rest, **kwargs))
            patch = fn(other, x.patch, *rest, **kwargs)
        out = PatchTensor(x.engine, clean, patch, x.start, x.lo, x.hi)
    return a._assign(out) if inplace and isinstance(a, PatchTensor) else out


def _tuple(value: Any, d: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * d
    value = tuple(int(v) for v in value)
    return value * d if len(value) == 1 else value


def _windowed(func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    x: PatchTensor = args[0]
    name = _name(func).lstrip("_")
    d = x.ndim - 2
    names = (_CONV_ARGS if name.startswith("conv") else
             _MAX_ARGS if name.startswith("max") else _AVG_ARGS)
    p = dict(zip(names, args, strict=False))
    p.update(kwargs)
    if name.startswith("conv"):
        if isinstance(p.get("padding", 0), str):
            return NotImplemented
        weight = p["weight"]
        kernel = tuple(weight.shape[2:])
        stride, pad = _tuple(p.get("stride", 1), d), _tuple(p.get("padding", 0), d)
        dil = _tuple(p.get("dilation", 1), d)
        fill = 0.0

        def op(region: torch.Tensor) -> torch.Tensor:
            return func(region, weight, p.get("bias"), stride, 0, dil, p.get("groups", 1))
    else:
        if p.get("ceil_mode") or p.get("return_indices"):
            return NotImplemented
        kernel = _tuple(p["kernel_size"], d)
        stride = _tuple(p.get("stride") or kernel, d)
        pad = _tuple(p.get("padding", 0), d)
        dil = _tuple(p.get("dilation", 1), d)
        is_max = name.startswith("max")
        if not is_max and any(pad) and (not p.get("count_include_pad", True)
                                        or p.get("divisor_override")):
            return NotImplemented
        fill = -math.inf if is_max else 0.0

        def op(region: torch.Tensor) -> torch.Tensor:
            if is_max:
                return func(region, kernel, stride, 0, dil)
            return func(region, kernel, stride, 0)
    clean = x.engine.clean(name, lambda: func(x.clean, *args[1:], **kwargs))
    out_size = clean.shape[2:]
    keff = [dl * (k - 1) + 1 for dl, k in zip(dil, kernel, strict=True)]
    lo = np.stack([np.clip(-(-(x.lo[:, a] + pad[a] - keff[a] + 1) // stride[a]), 0,
                           out_size[a]) for a in range(d)], axis=1)
    hi = np.stack([np.clip((x.hi[:, a] - 1 + pad[a]) // stride[a] + 1, 0, out_size[a])
                   for a in range(d)], axis=1)
    hi = np.maximum(hi, lo)
    lo, hi = _cap(x.engine.tau, lo, hi, out_size)
    if all(k == 1 for k in keff) and all(v == 1 for v in stride) and not any(pad):
        start, size = x.start, list(x.patch.shape[2:])  # point-wise: keep the box
    else:
        size = [max(1, int((hi - lo)[:, a].max())) for a in range(d)]
        start = np.stack([np.clip(lo[:, a], 0, out_size[a] - size[a]) for a in range(d)],
                         axis=1)
    r0 = start * np.array(stride) - np.array(pad)
    rsize = [(size[a] - 1) * stride[a] + keff[a] for a in range(d)]
    patch = op(x.region(r0, rsize, fill))
    return PatchTensor(x.engine, clean, patch, start, lo, hi)


def _cap(tau: float | None, lo: np.ndarray, hi: np.ndarray, size: Sequence[int]
         ) -> tuple[np.ndarray, np.ndarray]:
    """Krypton's projective-field threshold: keep at most ``tau * size`` positions per axis
    around the centre of the change (approximate mode only)."""
    if tau is None:
        return lo, hi
    cap = np.array([max(1, math.ceil(tau * s)) for s in size])
    width = hi - lo
    over = width > cap
    centre = (lo + hi) // 2
    new_lo = np.where(over, np.clip(centre - cap // 2, 0, np.array(size) - cap), lo)
    return new_lo, np.where(over, new_lo + cap, hi)


def _getitem(x: PatchTensor, index: Any) -> Any:
    idx = index if isinstance(index, tuple) else (index,)
    d = x.ndim - 2
    if len(idx) > x.ndim or not all(isinstance(i, slice) for i in idx) or \
            (idx and idx[0] != slice(None)):
        return x.full()[index]
    idx = tuple(idx) + (slice(None),) * (x.ndim - len(idx))
    chan = idx[1]
    out = x
    if chan != slice(None):
        clean = x.engine.clean("getitem_c", lambda: x.clean[:, chan])
        out = PatchTensor(x.engine, clean, x.patch[:, chan], x.start, x.lo, x.hi)
    for a, sl in enumerate(idx[2:]):
        if sl == slice(None):
            continue
        n = x.clean.shape[2 + a]
        first, stop, step = sl.indices(n)
        if step < 1:
            return x.full()[index]
        out = _strided(out, a, first, stop, step, d)
    return out


def _strided(x: PatchTensor, axis: int, first: int, stop: int, step: int, d: int
             ) -> PatchTensor:
    """``x[..., first:stop:step, ...]`` along one spatial axis."""
    sl = [slice(None)] * (2 + d)
    sl[2 + axis] = slice(first, stop, step)
    clean = x.engine.clean("getitem_s", lambda: x.clean[tuple(sl)])
    out_n = clean.shape[2 + axis]
    lo, hi = x.lo.copy(), x.hi.copy()
    lo[:, axis] = np.clip(-(-(x.lo[:, axis] - first) // step), 0, out_n)
    hi[:, axis] = np.clip(-(-(x.hi[:, axis] - first) // step), 0, out_n)
    hi = np.maximum(hi, lo)
    size = [x.patch.shape[2 + a] for a in range(d)]
    size[axis] = max(1, int((hi - lo)[:, axis].max()))
    start = x.start.copy()
    start[:, axis] = np.clip(lo[:, axis], 0, out_n - size[axis])
    r0 = x.start.copy()
    r0[:, axis] = first + start[:, axis] * step
    rsize = [x.patch.shape[2 + a] for a in range(d)]
    rsize[axis] = (size[axis] - 1) * step + 1
    region = x.region(r0, rsize)
    take = [slice(None)] * (2 + d)
    take[2 + axis] = slice(None, None, step)
    return PatchTensor(x.engine, clean, region[tuple(take)], start, lo, hi)


def _pad(func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    x: PatchTensor = args[0]
    p = dict(zip(("input", "pad", "mode", "value"), args, strict=False))
    p.update(kwargs)
    pads = list(p.get("pad", ()))
    if p.get("mode", "constant") != "constant" or any(v < 0 for v in pads):
        return NotImplemented
    d = x.ndim - 2
    pads += [0] * (2 * x.ndim - len(pads))
    spatial_lo = np.array([pads[2 * (d - 1 - a)] for a in range(d)])
    if any(pads[2 * d + 2 :]):
        return NotImplemented  # padding the batch axis
    value = p.get("value") or 0.0
    clean = x.engine.clean("pad", lambda: F.pad(x.clean, pads[: 2 * d + 2], value=value))
    patch = F.pad(x.patch, [0] * (2 * d) + pads[2 * d : 2 * d + 2], value=value)
    return PatchTensor(x.engine, clean, patch, x.start + spatial_lo, x.lo + spatial_lo,
                       x.hi + spatial_lo)


def occluded_batch(engine: Engine, x: torch.Tensor, base: torch.Tensor,
                   starts: Sequence[Sequence[int]], window: Sequence[int]) -> PatchTensor:
    """``len(starts)`` occluded copies of one image ``x`` ``[1, C, *S]``: window ``p``
    starts at ``starts[p]`` (cut at the border) and holds ``base`` there."""
    spatial = x.shape[2:]
    lo = np.array(starts, dtype=np.int64).reshape(len(starts), len(spatial))
    hi = np.minimum(lo + np.array(window), np.array(spatial))
    start = np.minimum(lo, np.array(spatial) - np.array(window))
    patch = gather(x, start, window)
    fills = gather(base, start, window)
    for i in range(len(lo)):
        sl = tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(lo[i], hi[i], start[i],
                                                                    strict=True))
        patch[(i, slice(None), *sl)] = fills[(i, slice(None), *sl)]
    return PatchTensor(engine, x, patch, start, lo, hi)
