"""The operations a :class:`~.patched.PatchTensor` recomputes on patches only
(Krypton-style incremental inference, :mod:`.incremental`): element-wise functions,
convolutions and pooling, strided slicing, padding, and element-wise operations of two
patched tensors. Each handler returns ``NotImplemented`` when it cannot keep the result
exact; the patched tensor then materialises the copies and runs the operation unchanged.
:data:`HANDLERS` maps operation names to handlers (what an :class:`~.patched.Engine` is
given).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .patched import Handler, PatchTensor
from .patched import op_name as _name
from .scoring import batch_layout

_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_MAX_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
             "return_indices")
_AVG_ARGS = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
             "divisor_override")
#: a patch box that spans at least this share of an axis is widened to the whole axis
EXPAND = 0.6


@functools.lru_cache(maxsize=256)
def _signature(func: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None


def _bind(func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]
          ) -> inspect.BoundArguments | None:
    sig = _signature(func)
    if sig is None:
        return None
    try:
        return sig.bind(*args, **kwargs)
    except TypeError:
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


def _one_patched_first(args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
    """The operation's first argument is the only patched tensor among its arguments."""
    return bool(args) and isinstance(args[0], PatchTensor) and not any(
        isinstance(a, PatchTensor) for a in (*args[1:], *kwargs.values()))


def unary(func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    if not _one_patched_first(args, kwargs):
        return NotImplemented
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
    patch = None
    if x.pending is not None:
        activation = _activation(fn, full_args, kw)
        if activation is not None:
            patch = x.pending(activation)
    if patch is None:
        patch = fn(x.patch, *rest, **kw)
    out = PatchTensor(x.engine, clean, patch, x.start, x.lo, x.hi)
    return x._assign(out) if inplace else out


def _activation(fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]
                ) -> tuple[str, list[float]] | None:
    """``("relu", [])`` or ``("hardtanh", [min, max])`` for a ReLU / ReLU6 / clamp call
    that a convolution can run fused; ``None`` otherwise."""
    name = _name(fn)
    if name == "relu":
        return "relu", []
    if name == "relu6":
        return "hardtanh", [0.0, 6.0]
    if name == "hardtanh":
        bound = _bind(fn, args, kwargs)
        if bound is None:
            return None
        bound.apply_defaults()
        values = [bound.arguments.get("min_val"), bound.arguments.get("max_val")]
    elif name in ("clamp", "clip"):  # a C function: no signature to bind
        values = [args[1] if len(args) > 1 else kwargs.get("min"),
                  args[2] if len(args) > 2 else kwargs.get("max")]
    else:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    return "hardtanh", [float(values[0]), float(values[1])]


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
        size = list(x.psize)
        if (x.start <= lo).all() and (x.start + np.array(size) >= hi).all():
            return lo, hi, x.start, size
    spatial = a.clean.shape[2:]
    size = [max(1, int((hi - lo)[:, k].max())) for k in range(lo.shape[1])]
    start = np.stack([np.clip(lo[:, k], 0, spatial[k] - size[k]) for k in range(len(size))],
                     axis=1)
    return lo, hi, start, size


def binary(func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    fn, args, kwargs, inplace = _out_of_place(func, args, kwargs)
    if len(args) < 2:
        return NotImplemented
    a, b = args[0], args[1]
    rest = tuple(args[2:])
    if isinstance(a, PatchTensor) and isinstance(b, PatchTensor):
        if a.clean.shape != b.clean.shape or len(a) != len(b):
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


def windowed(func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    if not _one_patched_first(args, kwargs):
        return NotImplemented
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
    clean = x.engine.clean(name, lambda: func(x.clean, *args[1:], **kwargs))
    out_size = clean.shape[2:]
    keff = [dl * (k - 1) + 1 for dl, k in zip(dil, kernel, strict=True)]
    lo = np.stack([np.clip(-(-(x.lo[:, a] + pad[a] - keff[a] + 1) // stride[a]), 0,
                           out_size[a]) for a in range(d)], axis=1)
    hi = np.stack([np.clip((x.hi[:, a] - 1 + pad[a]) // stride[a] + 1, 0, out_size[a])
                   for a in range(d)], axis=1)
    hi = np.maximum(hi, lo)
    lo, hi = _cap(x.engine.tau, lo, hi, out_size)
    spatial = tuple(x.clean.shape[2:])
    if all(k == 1 for k in keff) and all(v == 1 for v in stride) and not any(pad):
        start, size = x.start, list(x.psize)  # point-wise: keep the box
    else:
        size = [max(1, int((hi - lo)[:, a].max())) for a in range(d)]
        if x.engine.tau is None:
            # a box that spans most of an axis is widened to the whole axis: a little more
            # arithmetic, but from there on no gathers and unpadded full-map convolutions
            size = [o if s >= EXPAND * o else s for s, o in zip(size, out_size, strict=True)]
        start = np.stack([np.clip(lo[:, a], 0, out_size[a] - size[a]) for a in range(d)],
                         axis=1)
    whole = x.psize == spatial and tuple(size) == tuple(out_size) and not x.start.any()
    if whole:
        # the copies differ everywhere: the ordinary operation on the whole patch
        region, used_pad = x.patch, pad
    else:
        r0 = start * np.array(stride) - np.array(pad)
        rsize = [(size[a] - 1) * stride[a] + keff[a] for a in range(d)]
        region, used_pad = x.region(r0, rsize, fill), (0,) * d
    if not name.startswith("conv"):  # pooling
        if whole:
            patch = func(region, *args[1:], **kwargs)
        elif is_max:
            patch = func(region, kernel, stride, 0, dil)
        else:
            patch = func(region, kernel, stride, 0)
        return PatchTensor(x.engine, clean, patch, start, lo, hi)
    conv = (func, _fast(region), weight, p.get("bias"), stride, used_pad, dil,
            p.get("groups", 1))
    return PatchTensor(x.engine, clean, None, start, lo, hi,
                       pending=lambda activation: fused(*conv, activation),
                       size=size if not whole else out_size)


def fused(func: Callable[..., Any], region: torch.Tensor, weight: torch.Tensor,
          bias: torch.Tensor | None, stride: Sequence[int], padding: Sequence[int],
          dilation: Sequence[int], groups: int, activation: tuple[str, list[float]] | None
          ) -> torch.Tensor | None:
    """The convolution of ``region``; with ``activation``, the convolution followed by
    that ReLU/ReLU6 in one oneDNN primitive (the same values: the activation is exact),
    or ``None`` where that is not available (not a float32/bfloat16 CPU tensor, no
    oneDNN)."""
    if activation is None:
        return func(region, weight, bias, list(stride), list(padding), list(dilation), groups)
    if region.device.type != "cpu" or region.dtype not in (torch.float32, torch.bfloat16) or \
            not torch.backends.mkldnn.is_available() or region.dim() != 4 or \
            region.dtype in _FUSION_FAILED:
        return None
    try:
        return torch.ops.mkldnn._convolution_pointwise(
            region, weight, bias, list(padding), list(stride), list(dilation), groups,
            activation[0], activation[1], "")
    except (RuntimeError, AttributeError, NotImplementedError):
        _FUSION_FAILED.add(region.dtype)
        return None


#: dtypes for which the fused primitive has failed: from then on their convolutions run
#: unfused (a failure is not retried on every convolution of every batch)
_FUSION_FAILED: set[torch.dtype] = set()


def _fast(t: torch.Tensor) -> torch.Tensor:
    """Channels-last layout on CPU: depthwise and 1x1 convolutions of small batches run
    several times faster that way (oneDNN)."""
    return t.contiguous(memory_format=batch_layout(t))


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


def getitem(func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """``x[index]`` for channel slices and strided spatial slices."""
    x, index = args
    idx = index if isinstance(index, tuple) else (index,)
    d = x.ndim - 2
    if len(idx) > x.ndim or not all(isinstance(i, slice) for i in idx) or \
            (idx and idx[0] != slice(None)):
        return NotImplemented
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
            return NotImplemented
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
    size = list(x.psize)
    size[axis] = max(1, int((hi - lo)[:, axis].max()))
    start = x.start.copy()
    start[:, axis] = np.clip(lo[:, axis], 0, out_n - size[axis])
    r0 = x.start.copy()
    r0[:, axis] = first + start[:, axis] * step
    rsize = list(x.psize)
    rsize[axis] = (size[axis] - 1) * step + 1
    region = x.region(r0, rsize)
    take = [slice(None)] * (2 + d)
    take[2 + axis] = slice(None, None, step)
    return PatchTensor(x.engine, clean, region[tuple(take)], start, lo, hi)


def pad(func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    if not args or not isinstance(args[0], PatchTensor):
        return NotImplemented
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
    channel_pads = pads[2 * d : 2 * d + 2]
    patch = F.pad(x.patch, [0] * (2 * d) + channel_pads, value=value) if any(channel_pads) \
        else x.patch
    if x.psize == tuple(x.clean.shape[2:]) and not x.start.any():
        # the copies differ everywhere: pad the patch itself, so that it stays one whole
        # map (the next convolution then runs on it as it is, without a gather)
        patch = F.pad(patch, pads[: 2 * d], value=value)
        return PatchTensor(x.engine, clean, patch, x.start, x.lo + spatial_lo,
                           x.hi + spatial_lo)
    return PatchTensor(x.engine, clean, patch, x.start + spatial_lo, x.lo + spatial_lo,
                       x.hi + spatial_lo)


_UNARY_NAMES = (
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "sigmoid", "tanh", "silu", "gelu",
    "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "celu", "hardswish", "hardsigmoid",
    "mish", "softplus", "clamp", "clamp_", "clip", "clamp_min", "clamp_max", "batch_norm",
    "dropout", "neg", "abs", "exp", "square", "sqrt", "prelu",
)
_BINARY_NAMES = ("add", "sub", "mul", "div", "maximum", "minimum", "__add__", "__radd__",
                 "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "add_", "mul_")
_WINDOWED_NAMES = ("conv1d", "conv2d", "conv3d", "max_pool1d", "max_pool2d", "max_pool3d",
                   "_max_pool1d", "_max_pool2d", "_max_pool3d", "avg_pool1d", "avg_pool2d",
                   "avg_pool3d")

#: the handler of each operation name; every other operation runs on the materialised
#: copies
HANDLERS: dict[str, Handler] = {
    **dict.fromkeys(_UNARY_NAMES, unary), **dict.fromkeys(_BINARY_NAMES, binary),
    **dict.fromkeys(_WINDOWED_NAMES, windowed), "pad": pad, "constant_pad_nd": pad,
    "getitem": getitem,
}
