"""The affine operations LRP rules act on: ``z = f(x; W, b)``, linear in ``x`` for fixed
parameters.

A rule needs two primitives of its layer (Montavon et al. 2019, "Layer-wise relevance
propagation: an overview", section 10.2, the four-step recipe): the forward with
*modified* parameters ``f(x'; rho(W), rho(b))``, and its transpose ``rho(W)^T s`` (the
vector-Jacobian product with respect to the input). Convolutions and dense layers get
fast closed forms; any other layer with ``weight``/``bias`` uses its own ``forward`` with
temporarily substituted parameter tensors (restored in ``finally``) and autograd.

BatchNorm canonization (:mod:`.canonizers`) never writes to the model: a merged pair is an
op whose ``weight``/``bias`` are the fused values ``W * s`` and ``(b - mu) * s + beta``.

Ops are cached between calls (:mod:`.cache`), so they hold their module only by weak
reference (a cache must not keep the user's model alive) and keep tensors that rules
derive from the parameters (``w+``, ``w-``, ...) in :meth:`AffineOp.derived`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor

CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
LINEAR = (nn.Linear,)
BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class AffineOp:
    """``z = f(x; weight, bias)``; subclasses implement :meth:`forward` and :meth:`vjp`."""

    weight: Tensor
    bias: Tensor | None
    memo: dict[Hashable, Any]

    def derived(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """``make()``, computed once per op (an op lives as long as its parameters are
        unchanged): modified weights such as ``weight.clamp(min=0)``."""
        memo = self.__dict__.setdefault("memo", {})
        if key not in memo:
            memo[key] = make()
        return memo[key]

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        raise NotImplementedError

    def vjp(self, x: Tensor, weight: Tensor, s: Tensor) -> Tensor:
        """``d <f(x; weight, 0), s> / dx``, shaped like ``x`` (independent of its value)."""
        with torch.enable_grad():
            xz = torch.zeros_like(x).requires_grad_(True)
            out = self.forward(xz, weight, None)
            return torch.autograd.grad(out, xz, s)[0]


class _OfModule(AffineOp):
    """An op that calls its module, held by weak reference."""

    _module: weakref.ref

    @property
    def module(self) -> nn.Module:
        module = self._module()
        assert module is not None, "the op outlived its model"
        return module


class ConvOp(_OfModule):
    """``nn.Conv1d/2d/3d`` (any padding mode, groups, dilation)."""

    def __init__(self, module: nn.Module, weight: Tensor, bias: Tensor | None) -> None:
        self._module, self.weight, self.bias = weakref.ref(module), weight, bias

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return self.module._conv_forward(x, weight, bias)

    def vjp(self, x: Tensor, weight: Tensor, s: Tensor) -> Tensor:
        m = self.module
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            return super().vjp(x, weight, s)
        # torch.nn.grad.conv*_input with the real input in place of an expanded dummy,
        # which convolution_backward would first copy into a contiguous tensor
        return torch.ops.aten.convolution_backward(
            s, x, weight, None, m.stride, m.padding, m.dilation, False,
            [0] * (weight.dim() - 2), m.groups, (True, False, False))[0]


class LinearOp(AffineOp):
    """``nn.Linear``."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        self.weight, self.bias = weight, bias

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(x, weight, bias)

    def vjp(self, x: Tensor, weight: Tensor, s: Tensor) -> Tensor:
        return s @ weight


class ChannelAffineOp(AffineOp):
    """A per-channel affine map ``x * w[c] + b[c]`` (a BatchNorm that could not be merged)."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        self.weight, self.bias = weight, bias

    @staticmethod
    def _shape(t: Tensor, x: Tensor) -> Tensor:
        return t.view(1, -1, *([1] * (x.dim() - 2)))

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        out = x * self._shape(weight, x)
        return out if bias is None else out + self._shape(bias, x)

    def vjp(self, x: Tensor, weight: Tensor, s: Tensor) -> Tensor:
        return s * self._shape(weight, x)


class ModuleOp(_OfModule):
    """Any other module with a ``weight`` (and optional ``bias``), assumed linear in its
    input: its class ``forward`` runs with the parameter entries swapped for the modified
    tensors and put back in ``finally`` (the instance ``forward`` is the LRP wrapper)."""

    def __init__(self, module: nn.Module) -> None:
        self._module = weakref.ref(module)
        self.weight = module.weight.detach()
        bias = getattr(module, "bias", None)
        self.bias = bias.detach() if isinstance(bias, Tensor) else None

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        params: dict[str, Any] = self.module._parameters
        old = dict(params)
        try:
            params["weight"] = weight
            if "bias" in params and params["bias"] is not None:
                params["bias"] = bias if bias is not None else torch.zeros_like(params["bias"])
            return type(self.module).forward(self.module, x)
        finally:
            params.clear()
            params.update(old)


def batchnorm_scale(bn: nn.Module) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as ``x * scale + shift`` per channel."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("no running statistics")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale.detach(), shift.detach()


def make_op(module: nn.Module, merged_bn: nn.Module | None = None) -> AffineOp:
    """The op of ``module``, with ``merged_bn`` (a BatchNorm reading only its output)
    folded in (Zennit's ``MergeBatchNorm`` arithmetic, without writing to the model)."""
    if isinstance(module, BATCHNORM):
        scale, shift = batchnorm_scale(module)
        return ChannelAffineOp(scale, shift)
    if not isinstance(module, CONV + LINEAR):
        return ModuleOp(module)
    weight = module.weight.detach()
    bias = module.bias.detach() if module.bias is not None else None
    if merged_bn is not None:
        scale, shift = batchnorm_scale(merged_bn)
        weight = weight * scale.view(-1, *([1] * (weight.dim() - 1)))
        bias = shift if bias is None else bias * scale + shift
    if isinstance(module, CONV):
        return ConvOp(module, weight, bias)
    return LinearOp(weight, bias)
