"""Modified backward passes at ReLU-type activations, whether they are modules or
functional calls.

One :class:`~torch.overrides.TorchFunctionMode` sees every activation call made during a
forward pass: ``nn.ReLU`` (in-place or not), ``nn.ReLU6``, ``F.relu``, ``torch.relu``,
``Tensor.relu``/``relu_``, ``F.hardtanh``/``F.relu6`` with a lower bound of 0 and
``clamp(min=0)``. It replaces each by an autograd function with the same forward value and
a rule for the backward signal ``R`` at forward input ``a``:

- ``"guided"`` (Springenberg et al. 2015, Guided Backpropagation): ``1[lo < a < hi] * relu(R)``
- ``"deconvnet"`` (Zeiler & Fergus 2014): ``relu(R)``

Nothing on the model changes, so in-place and re-used modules need no special care; an
in-place call stays in place (an autograd function that marks its input dirty).

Other activations (SiLU, GELU, LeakyReLU, ...) have no standard guided rule. The policy
``other="gradient"`` (default) keeps their ordinary gradient and warns once, naming them;
``"gate"`` treats them like a ReLU gate ``1[a > 0] * relu(R)``; ``"error"`` refuses.
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..errors import NotApplicableError

RULES = ("guided", "deconvnet")
OTHER_POLICIES = ("gradient", "gate", "error")

_RELU = {F.relu, torch.relu, torch.Tensor.relu, F.relu_, torch.relu_, torch.Tensor.relu_}
_INPLACE = {F.relu_, torch.relu_, torch.Tensor.relu_, F.hardtanh_, torch.Tensor.clamp_,
            torch.Tensor.clamp_min_, torch.clamp_, torch.clamp_min_}
_HARDTANH = {F.hardtanh, F.hardtanh_}
_CLAMP = {torch.clamp, torch.Tensor.clamp, torch.clamp_min, torch.Tensor.clamp_min,
          torch.Tensor.clamp_, torch.Tensor.clamp_min_, torch.clamp_, torch.clamp_min_}
_OTHER = {F.leaky_relu, F.leaky_relu_, F.elu, F.elu_, F.selu, F.celu, F.gelu, F.silu, F.mish,
          F.hardswish, F.softplus, F.prelu, F.rrelu}


class _Gate(torch.autograd.Function):
    """Forward: ``fn(x)`` as given; backward: the chosen rule at a gate ``lo < a < hi``.

    The gate is read from one saved tensor with PyTorch's fused backward kernels
    (``threshold_backward``/``hardtanh_backward``), as the native activations do: no boolean
    mask is built in the forward pass. ``a`` is the output ``out`` (``use_out=True``: ReLU,
    which PyTorch also saves by its result) or the input ``x``; ``out`` lies strictly inside
    the gate exactly when ``x`` does, because ``out = clamp(x, lo, hi)``.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, out: torch.Tensor, lo: float, hi: float | None,
                rule: str, use_out: bool) -> torch.Tensor:
        if rule == "guided":
            ctx.save_for_backward(out if use_out else x)
        ctx.rule, ctx.lo, ctx.hi = rule, lo, hi
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return _rule_backward(ctx, grad), None, None, None, None, None


class _GateInplace(torch.autograd.Function):
    """The in-place variant (``relu_``, ``nn.ReLU(inplace=True)``, ...): clamps ``x`` in
    place and marks it dirty, like PyTorch's own in-place activations, so no copy is made;
    the backward reads the gate from the clamped ``x``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lo: float, hi: float | None, rule: str
                ) -> torch.Tensor:
        x.clamp_(lo, hi)
        ctx.mark_dirty(x)
        if rule == "guided":
            ctx.save_for_backward(x)
        ctx.rule, ctx.lo, ctx.hi = rule, lo, hi
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return _rule_backward(ctx, grad), None, None, None


def _rule_backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
    """``relu(R)`` (DeconvNet), or ``1[lo < a < hi] * relu(R)`` (guided) with the saved
    ``a``."""
    if ctx.rule != "guided":
        return grad.clamp_min(0)
    (a,) = ctx.saved_tensors
    if ctx.hi is None:  # zero where a <= lo: the ordinary ReLU backward
        gated = torch.ops.aten.threshold_backward(grad, a, ctx.lo)
    else:  # zero where a <= lo or a >= hi: the ordinary ReLU6/hardtanh backward
        gated = torch.ops.aten.hardtanh_backward(grad, a, ctx.lo, ctx.hi)
    return gated.clamp_min_(0)  # a fresh tensor of our own: in place is safe


def _arg(args: tuple, kwargs: dict, pos: int, name: str, default: Any) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[pos] if len(args) > pos else default


class ModifiedActivations(TorchFunctionMode):
    """Intercept ReLU-type calls during a forward pass; see the module docstring.

    ``counts`` tells how many calls of each kind were replaced; ``others`` names the other
    activations met (and how the policy treated them).
    """

    def __init__(self, rule: str = "guided", other: str = "gradient") -> None:
        super().__init__()
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}")
        if other not in OTHER_POLICIES:
            raise ValueError(f"other must be one of {OTHER_POLICIES}")
        self.rule, self.other = rule, other
        self.counts: Counter[str] = Counter()
        self.others: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        gate = self._gate_bounds(func, args, kwargs)
        if gate is not None:
            x = args[0]
            if not (isinstance(x, torch.Tensor) and x.is_floating_point()):
                return func(*args, **kwargs)
            lo, hi = gate
            inplace = func in _INPLACE or bool(kwargs.get("inplace", False)) or (
                func in _HARDTANH and _arg(args, kwargs, 3, "inplace", False)) or (
                func in _RELU and _arg(args, kwargs, 1, "inplace", False) is True)
            self.counts[getattr(func, "__name__", str(func))] += 1
            if inplace:
                return _GateInplace.apply(x, lo, hi, self.rule)
            with torch.no_grad():
                out = x.clamp(lo, hi)
            return _Gate.apply(x, out, lo, hi, self.rule, func in _RELU)
        if func in _OTHER:
            name = getattr(func, "__name__", str(func))
            self.others[name] += 1
            if self.other == "error":
                raise NotApplicableError(
                    f"the model uses {name}, which has no standard {self.rule} rule; pass "
                    f"other_activations='gradient' to keep its ordinary gradient or 'gate' to "
                    f"treat it like a ReLU gate"
                )
            if self.other == "gate":
                x = args[0]
                with torch.no_grad():
                    out = func(*args, **kwargs)
                return _Gate.apply(x, out, 0.0, None, self.rule, False)
        return func(*args, **kwargs)

    @staticmethod
    def _gate_bounds(func: Any, args: tuple, kwargs: dict) -> tuple[float, float | None] | None:
        if func in _RELU:
            return 0.0, None
        if func is F.relu6:
            return 0.0, 6.0
        if func in _HARDTANH:
            lo = _arg(args, kwargs, 1, "min_val", -1.0)
            hi = _arg(args, kwargs, 2, "max_val", 1.0)
            return (0.0, float(hi)) if lo == 0 else None
        if func in _CLAMP:
            lo = _arg(args, kwargs, 1, "min", None)
            hi = _arg(args, kwargs, 2, "max", None)
            if isinstance(lo, (int, float)) and lo == 0 and (hi is None or isinstance(
                    hi, (int, float))):
                return 0.0, None if hi is None else float(hi)
        return None

    @property
    def calls(self) -> int:
        """Activation calls met so far, replaced or not."""
        return sum(self.counts.values()) + sum(self.others.values())

    def warn_others(self, method: str) -> None:
        if self.others and self.other == "gradient":
            names = ", ".join(f"{n} ({c}x)" for n, c in self.others.items())
            warnings.warn(
                f"{method}: the model also uses {names}; these activations have no standard "
                f"guided rule and keep their ordinary gradient (other_activations='gradient'). "
                f"The map is therefore not comparable with published Guided Backprop maps; "
                f"other_activations='gate' treats them like a ReLU gate, 'error' refuses.",
                stacklevel=3,
            )


def check_no_script_submodules(module: torch.nn.Module, method: str) -> None:
    """TorchScript submodules run without Python and so hide their activations."""
    for name, sub in module.named_modules():
        if isinstance(sub, torch.jit.ScriptModule):
            raise NotApplicableError(
                f"{method} must see every ReLU, but submodule {name or '<root>'} is TorchScript "
                f"and hides its activations; load the model from its Python code"
            )
