"""LRP through normalisation layers: LayerNorm, GroupNorm and RMSNorm, any layout.

``y = gamma * (x - mu(x)) / sigma(x) + beta`` is not affine in ``x``. The LN-rule (spec
``methods-more.md`` section 19.3) treats the statistics as constants: with ``sigma``
detached (``norm_rule="std_constant"``, the default) the layer becomes
``y = J x + beta``, ``J = diag(gamma / sigma) (I - 1 1^T / N)`` per normalisation group,
and LRP-epsilon on it is ``R_x = x * J^T (R_y / stab(y))``. With ``beta = 0`` it is
conservative (``sum_i x_i J_ki = y_k``). This is the rule of Ali et al. 2022, "XAI for
transformers: better explanations through conservative propagation" (ICML 2022; their
``LNargsDetachNotMean``) and of AttnLRP (Achtibat et al. 2024, ICML 2024; LXT's
``layer_norm_forward``). ``"mean_std_constant"`` also detaches ``mu`` (Ali et al.'s
``LNargsDetach``): then ``-gamma mu / sigma`` acts as a bias, which absorbs relevance and is
unbounded where ``x ~ mu``; it is offered only to reproduce that code. RMSNorm with the
root mean square constant is a diagonal scaling (identity rule).

The rule never re-implements a layer from its module type: :mod:`.functional` intercepts
the calls ``F.layer_norm``, ``F.group_norm`` and ``F.rms_norm`` wherever they are made
(``nn.LayerNorm``, channels-first ``LayerNorm2d`` subclasses that permute around
``F.layer_norm``, ``nn.GroupNorm``, functional calls in a block's ``forward``), runs the
real call forward and differentiates :func:`detached` of the same call backward. A norm
computed by hand (``torch.var_mean``, ``rsqrt``, ...) is not a known op and is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

Tensor = torch.Tensor

NORM_RULES = ("std_constant", "mean_std_constant")
STAT_NORMS = {"layer_norm", "group_norm", "rms_norm"}


def _arg(args: tuple, kwargs: dict, pos: int, name: str, default: Any = None) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[pos] if len(args) > pos else default


def _centre_scale(x: Tensor, dims: Sequence[int], eps: float, detach_mean: bool) -> Tensor:
    """``(x - mu) / sigma`` over ``dims`` with ``sigma`` (and ``mu`` if asked) detached;
    the biased variance, as ``F.layer_norm`` uses."""
    mu = x.mean(dim=tuple(dims), keepdim=True)
    var = (x - mu).pow(2).mean(dim=tuple(dims), keepdim=True)
    sigma = (var + eps).sqrt().detach()
    return (x - (mu.detach() if detach_mean else mu)) / sigma


def _layer_norm(x: Tensor, args: tuple, kwargs: dict, detach_mean: bool) -> Tensor:
    shape = _arg(args, kwargs, 1, "normalized_shape")
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    weight, bias = _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias")
    eps = _arg(args, kwargs, 4, "eps", 1e-5)
    y = _centre_scale(x, range(x.dim() - len(shape), x.dim()), eps, detach_mean)
    if weight is not None:
        y = y * weight
    return y if bias is None else y + bias


def _group_norm(x: Tensor, args: tuple, kwargs: dict, detach_mean: bool) -> Tensor:
    groups = _arg(args, kwargs, 1, "num_groups")
    weight, bias = _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias")
    eps = _arg(args, kwargs, 4, "eps", 1e-5)
    b, c = x.shape[:2]
    y = _centre_scale(x.reshape(b, groups, -1), (2,), eps, detach_mean).reshape(x.shape)
    per_channel = (1, c) + (1,) * (x.dim() - 2)
    if weight is not None:
        y = y * weight.reshape(per_channel)
    return y if bias is None else y + bias.reshape(per_channel)


def _rms_norm(x: Tensor, args: tuple, kwargs: dict, detach_mean: bool) -> Tensor:
    shape = _arg(args, kwargs, 1, "normalized_shape")
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    weight = _arg(args, kwargs, 2, "weight")
    eps = _arg(args, kwargs, 3, "eps")
    if eps is None:
        eps = torch.finfo(x.dtype).eps
    dims = tuple(range(x.dim() - len(shape), x.dim()))
    rms = (x.pow(2).mean(dim=dims, keepdim=True) + eps).sqrt().detach()
    y = x / rms
    return y if weight is None else y * weight


_DETACHED: dict[str, Callable[[Tensor, tuple, dict, bool], Tensor]] = {
    "layer_norm": _layer_norm, "group_norm": _group_norm, "rms_norm": _rms_norm}


def detached(name: str, args: tuple, kwargs: dict, rule: str) -> Callable[[Tensor], Tensor]:
    """The call ``name(x, *args[1:], **kwargs)`` as a function of ``x`` with its statistics
    detached per ``rule`` (its gradient is ``J^T``)."""
    fn, detach_mean = _DETACHED[name], rule == "mean_std_constant"
    return lambda t: fn(t, args, kwargs, detach_mean)
