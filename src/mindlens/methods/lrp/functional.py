"""LRP for the parameter-free operations of a forward pass, module or functional alike.

One :class:`~torch.overrides.TorchFunctionMode` sees every torch call made outside the
rule-bearing layers, so ``F.relu``, ``x + y``, ``torch.add``, ``out += identity`` and
``F.adaptive_avg_pool2d`` in user code are handled without rewriting the model:

- element-wise activations (ReLU, ReLU6, hardtanh, clamp, SiLU, ...): **pass** (relevance
  unchanged, Zennit ``Pass``), or their ordinary gradient (``activations="gradient"``,
  used by the LRP-0/epsilon composite so that it equals gradient x input exactly);
- additions/subtractions ``y = u + v``: **sum rule**, a proportional split
  ``R_u = u R / stab(u + v)`` (the plain gradient would copy ``R`` to both and double it;
  Montavon et al. 2019, section 10.1); a constant operand acts like a bias;
- sum / average pooling, ``mean`` and ``sum``: **norm rule**, ``R_i = x_i (dz/dx)^T
  (R / stab(z))`` (linear layers with weights ``1/|pool|``, Zennit ``Norm``);
- multiplication or division by a constant: pass (a diagonal linear map); this is also
  the identity rule for layer scale ``lambda * x`` (spec ``methods-more.md`` section 19.5);
- element-wise gating ``x * s`` where ``s`` is the output of a ``sigmoid`` or
  ``hardsigmoid`` (possibly reshaped): squeeze-and-excitation and relatives (section
  19.2). ``gate_rule="gate_constant"`` (default): the gate is a constant, all relevance goes
  to the gated signal ``x`` and none into the gate branch (Arras et al. 2017 for LSTM gates;
  Ali et al. 2022; LXT's ``cp_gated_mlp_forward``); ``"uniform"`` (AttnLRP, Achtibat et al.
  2024, Prop. 3.2): each factor gets half, the gate's half flows on through the gate branch;
- normalisation ``F.layer_norm``/``group_norm``/``rms_norm``: LRP-epsilon on the layer with
  its statistics constant (:mod:`.norms`, ``norm_rule``);
- routing ops (slicing, reshape, concatenation, padding, max pooling = winner takes all,
  dropout in eval mode): their ordinary gradient, which moves relevance without changing it;
- anything else that carries relevance raises :class:`NotApplicableError`, naming the op
  and the module that called it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ...errors import NotApplicableError
from .norms import NORM_RULES, STAT_NORMS, detached
from .rules import stabilize

Tensor = torch.Tensor

ACTIVATIONS = {
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "elu",
    "elu_", "selu", "selu_", "celu", "celu_", "gelu", "silu", "mish", "hardswish",
    "softplus", "prelu", "rrelu", "rrelu_", "sigmoid", "sigmoid_", "tanh", "tanh_",
    "hardsigmoid", "softsign", "threshold", "threshold_", "clamp", "clamp_", "clamp_min",
    "clamp_min_", "clip", "clip_",
}
_SUMS = {"add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_", "__sub__",
         "__rsub__", "__isub__", "subtract"}
_SCALES = {"mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply", "div", "div_",
           "__truediv__", "__itruediv__", "divide", "true_divide", "neg", "__neg__",
           "negative"}
NORMS = {"avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
          "adaptive_avg_pool2d", "adaptive_avg_pool3d", "mean", "sum"}
ROUTES = {
    "__getitem__", "__setitem__", "__get__", "view", "view_as", "reshape", "reshape_as",
    "flatten", "unflatten", "permute", "transpose", "t", "squeeze", "unsqueeze",
    "contiguous", "clone", "cat", "concat", "concatenate", "stack", "hstack", "vstack",
    "split", "chunk", "narrow", "select", "unbind", "expand", "expand_as", "repeat", "pad",
    "max_pool1d", "max_pool2d", "max_pool3d", "_max_pool1d", "_max_pool2d", "_max_pool3d",
    "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "_adaptive_max_pool1d", "_adaptive_max_pool2d", "_adaptive_max_pool3d",
    "adaptive_max_pool2d_with_indices", "dropout", "dropout1d", "dropout2d", "dropout3d",
    "alpha_dropout", "feature_alpha_dropout", "to", "float", "double", "half", "type",
    "type_as", "detach", "cpu", "cuda", "roll", "flip", "movedim", "moveaxis", "swapaxes",
    "identity",
}
#: self-gating activations ``f(x) = x g(x)``, ``g >= 0``: the identity rule is LRP-0 for them
#: (AttnLRP eq. 9), so they pass relevance also under ``activations="gradient"``
SELF_GATING = {"silu", "gelu", "mish", "hardswish"}
_GATES = {"sigmoid", "sigmoid_", "hardsigmoid"}  # outputs that gate a product
_PRODUCTS = {"mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply"}
GATE_RULES = ("gate_constant", "uniform")
_INPLACE = {"relu_", "hardtanh_", "leaky_relu_", "elu_", "selu_", "celu_", "rrelu_",
            "sigmoid_", "tanh_", "threshold_", "clamp_", "clamp_min_", "clip_", "add_",
            "__iadd__", "sub_", "__isub__", "mul_", "__imul__", "div_", "__itruediv__"}


def _is_data(t: Any) -> bool:
    return isinstance(t, Tensor) and t.requires_grad


def _inplace(name: str, args: tuple, kwargs: dict) -> bool:
    if name in _INPLACE or kwargs.get("inplace") is True:
        return True
    # F.relu(x, True), F.hardtanh(x, 0, 6, True), F.leaky_relu(x, slope, True), ...
    return any(a is True for a in args[1:]) and name in ACTIVATIONS


class _Pass(torch.autograd.Function):
    """Forward ``call(x)``; backward: relevance unchanged (summed over broadcast copies)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, call: Callable[[Tensor], Tensor]) -> Tensor:
        ctx.shape = x.shape
        return call(x)

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple[Tensor | None, ...]:
        return r.sum_to_size(ctx.shape), None


class _Norm(torch.autograd.Function):
    """Forward ``z = call(x)`` (linear, parameter-free); backward
    ``x * (dz/dx)^T (R / stab(z))``, the derivative taken of ``linear`` (default ``call``:
    a normalisation layer passes its own call with the statistics detached)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, call: Callable[[Tensor], Tensor], eps: float,
                linear: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        out = call(x)
        ctx.save_for_backward(x)
        ctx.den, ctx.call = stabilize(out, eps), linear or call
        return out

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple[Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            xd = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(ctx.call(xd), xd, r / ctx.den)
        return x * g, None, None, None


class _Uniform(torch.autograd.Function):
    """``y = a * b``; backward: half of ``R`` to each factor (summed over broadcast
    copies), AttnLRP's uniform rule for products."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor) -> Tensor:
        ctx.shapes = a.shape, b.shape
        return a * b

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple[Tensor | None, ...]:
        half = r / 2
        return half.sum_to_size(ctx.shapes[0]), half.sum_to_size(ctx.shapes[1])


class _Sum(torch.autograd.Function):
    """``y = a * ca + b * cb`` (``a``/``b`` tensors or numbers); each tensor operand that
    carries relevance gets ``R * (its term) / stab(y)``."""

    @staticmethod
    def forward(ctx: Any, eps: float, ca: float, cb: float, inplace: bool, a: Any, b: Any
                ) -> Tensor:
        out = (a * ca if ca != 1 else a) + (b * cb if cb != 1 else b)
        if not isinstance(out, Tensor):
            out = torch.as_tensor(out)
        ctx.den, ctx.coef = stabilize(out, eps), (ca, cb)
        keep = [t if need else None
                for t, need in ((a, ctx.needs_input_grad[4]), (b, ctx.needs_input_grad[5]))]
        if inplace and keep[0] is not None:  # ``a`` is overwritten with the result
            keep[0] = keep[0].clone()
        ctx.keep = keep
        return out

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple[Tensor | None, ...]:
        s = r / ctx.den
        grads = [None if t is None else (s * t * c if c != 1 else s * t).sum_to_size(t.shape)
                 for t, c in zip(ctx.keep, ctx.coef, strict=True)]
        return None, None, None, None, grads[0], grads[1]


class LRPMode(TorchFunctionMode):
    """See the module docstring. ``paused`` > 0 lets calls through untouched (used inside
    the rule layers). ``observer(func, args, kwargs, result)`` (tracing) sees every call made
    while not paused; ``where()`` names the module being run, for error messages."""

    def __init__(self, activations: str = "pass", epsilon: float = 1e-6,
                 observer: Callable[[Any, tuple, dict, Any], None] | None = None,
                 where: Callable[[], str] | None = None, gate_rule: str = "gate_constant",
                 norm_rule: str = "std_constant") -> None:
        super().__init__()
        if gate_rule not in GATE_RULES or norm_rule not in NORM_RULES:
            raise ValueError(f"gate_rule must be in {GATE_RULES}, norm_rule in {NORM_RULES}")
        self.activations, self.epsilon = activations, epsilon
        self.gate_rule, self.norm_rule = gate_rule, norm_rule
        self.observer, self.where = observer, where
        self.paused = 0
        self.counts: Counter[str] = Counter()
        self.gates: dict[int, Tensor] = {}  # gate tensors by id (kept alive: ids stay unique)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if self.paused:
            return func(*args, **kwargs)
        result = self._dispatch(func, args, kwargs)
        if self.observer is not None:
            self.observer(func, args, kwargs, result)
        return result

    def _dispatch(self, func: Any, args: tuple, kwargs: dict) -> Any:
        name = getattr(func, "__name__", "")
        if not any(_is_data(a) for a in args) and not any(
                _is_data(t) for a in args if isinstance(a, (list, tuple)) for t in a):
            return func(*args, **kwargs)
        if name in ACTIVATIONS:
            if self.activations == "gradient" and name not in SELF_GATING:
                out = func(*args, **kwargs)
            else:
                out = self._pass(name, func, args, kwargs, 0)
            if name in _GATES:
                self.gates[id(out)] = out
            return out
        if name in _SUMS and len(args) >= 2:
            return self._sum(name, args, kwargs)
        if name in _SCALES:
            data = [i for i, a in enumerate(args) if _is_data(a)]
            if len(data) == 1 and name not in ("__rtruediv__",) and (
                    data[0] == 0 or name in ("mul", "__mul__", "__rmul__", "multiply")):
                return self._pass(name, func, args, kwargs, data[0])
            if name in _PRODUCTS and len(data) == 2:
                return self._gate(name, func, args, kwargs)
            raise self._error(name, "a product or quotient of two relevance-carrying "
                              "tensors has no LRP rule (only a product with a sigmoid or "
                              "hardsigmoid gate has one)")
        if name in NORMS and _is_data(args[0]):
            self.counts[name] += 1
            rest = args[1:]
            return _Norm.apply(args[0], lambda t: func(t, *rest, **kwargs), self.epsilon)
        if name in STAT_NORMS and _is_data(args[0]):
            self.counts[name] += 1
            rest = args[1:]
            return _Norm.apply(args[0], lambda t: func(t, *rest, **kwargs), self.epsilon,
                               detached(name, args, kwargs, self.norm_rule))
        result = func(*args, **kwargs)
        if name in ROUTES or (name == "interpolate" and kwargs.get("mode", "nearest") == "nearest"):
            if any(id(a) in self.gates for a in args):  # a reshaped gate is still a gate
                for t in result if isinstance(result, (tuple, list)) else (result,):
                    self.gates[id(t)] = t
            return result
        outs = result if isinstance(result, (tuple, list)) else (result,)
        if any(_is_data(t) for t in outs):
            raise self._error(name, "LRP has no rule for it")
        return result

    def _pass(self, name: str, func: Any, args: tuple, kwargs: dict, pos: int) -> Tensor:
        self.counts[name] += 1
        x = args[pos]
        inplace = _inplace(name, args, kwargs)

        def call(t: Tensor) -> Tensor:
            new = list(args)
            new[pos] = t.clone() if inplace else t
            return func(*new, **kwargs)

        out = _Pass.apply(x, call)
        return x.copy_(out) if inplace else out

    def _gate(self, name: str, func: Any, args: tuple, kwargs: dict) -> Tensor:
        """``x * s`` with ``s`` a gate (see the module docstring)."""
        marked = [id(a) in self.gates for a in args[:2]]
        if marked.count(True) != 1:
            raise self._error(name, "a product of two relevance-carrying tensors has no "
                              "LRP rule unless exactly one factor is a gate (the output of "
                              "a sigmoid or hardsigmoid, as in squeeze-and-excitation)")
        inplace = name in _INPLACE
        if inplace and marked[0]:
            raise self._error(name, "an in-place product into the gate (s *= x) is not "
                              "supported; write x = x * s")
        self.counts["gate"] += 1
        if self.gate_rule == "uniform":
            if inplace:  # the gate branch's rules keep x for their backward pass
                raise self._error(name, "an in-place gate product (x *= s) cannot take "
                                  "gate_rule='uniform'; use 'gate_constant' or write "
                                  "x = x * s")
            return _Uniform.apply(args[0], args[1])
        return self._pass(name, func, args, kwargs, marked.index(False))

    def _sum(self, name: str, args: tuple, kwargs: dict) -> Tensor:
        self.counts["sum"] += 1
        a, b = args[0], args[1]
        alpha = kwargs.get("alpha", args[2] if len(args) > 2 else 1)
        inplace = name in _INPLACE
        if name == "__rsub__":  # b - alpha * a
            out = _Sum.apply(self.epsilon, -alpha, 1, inplace, a, b)
        else:
            out = _Sum.apply(self.epsilon, 1, -alpha if "sub" in name else alpha, inplace, a, b)
        return a.copy_(out) if inplace else out

    def _error(self, name: str, why: str) -> NotApplicableError:
        where = self.where() if self.where is not None else "the model"
        return NotApplicableError(
            f"LRP: the functional op {name!r} in {where} acts on relevance-carrying "
            f"activations and {why}. Supported outside layers: element-wise activations, "
            f"+/-, sum/average pooling, mean, scaling by constants, sigmoid gates, "
            f"layer_norm/group_norm/rms_norm, and routing ops (slicing, reshape, cat, "
            f"pad, max pooling). Wrap the op in a module with "
            f"weight/bias and give it a rule (composite={{'<module name>': 'epsilon'}}), "
            f"or use a gradient method."
        )
