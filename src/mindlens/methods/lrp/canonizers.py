"""Canonization and rule assignment from one traced forward pass.

Zennit's ``SequentialMergeBatchNorm`` pairs a BatchNorm with the linear layer *registered*
just before it, and is silently wrong when registration order is not execution order.
Here one forward pass of the first image (inside ``clf.patched()``, so nothing stays on
the model) records what really happens:

- every call of a layer that carries a rule (convolutions, dense layers, BatchNorm, any
  user-mapped type), with the identity of its input and output tensors;
- every functional op outside those layers, through :class:`~.functional.LRPMode`, which
  also rejects unsupported ops, naming the op and the module that called it;
- how many times each tensor is consumed.

A BatchNorm is merged into a convolution or dense layer when it reads exactly that
layer's output, nothing else reads it, and both run once per forward (Zennit's
``MergeBatchNorm`` arithmetic, applied to copies: see :func:`~.ops.make_op`). The merged
BatchNorm then runs as the identity during the LRP pass. Residual additions, also
functional ``a + b`` / ``torch.add`` / ``+=``, get the sum rule and concatenations their
routing gradient from :mod:`.functional`; nothing needs rewriting.

The first linear-type layer (for ``Flat``/``ZBox`` first-layer rules) is the first one
*executed*, not the first registered.

The trace also records which layers read a tensor that is non-negative by construction
(the output of a ReLU, ReLU6, sigmoid, clamp at ``min >= 0``, ..., possibly moved by
routing ops or pooled), so that their rules can skip splitting the input into positive
and negative parts (an extra pass over it per layer, and a device sync).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from ...errors import NotApplicableError
from ...model import Classifier
from .composites import Composite
from .functional import NORMS, ROUTES, LRPMode
from .ops import BATCHNORM, CONV, LINEAR, AffineOp, make_op
from .rules import Rule, ZBox

_NONNEG = {"relu", "relu_", "relu6", "sigmoid", "sigmoid_", "softplus", "hardsigmoid"}
_NONNEG_IF_LOW = {"hardtanh": "min_val", "hardtanh_": "min_val", "clamp": "min",
                  "clamp_": "min", "clamp_min": "min", "clamp_min_": "min", "clip": "min",
                  "clip_": "min"}  # non-negative when the lower bound is >= 0
STAT_NORM_MODULES = (nn.LayerNorm, nn.GroupNorm) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
_ACTIVATION_MODULES = (nn.PReLU, nn.RReLU, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.Hardtanh,
                       nn.SiLU, nn.GELU, nn.ELU, nn.SELU, nn.CELU, nn.Sigmoid, nn.Tanh)


@dataclass
class LayerPlan:
    """One rule-bearing layer for one LRP pass."""

    name: str
    module: nn.Module
    rule: Rule
    op: AffineOp
    merged: str | None = None
    nonneg: bool = False  # the input is >= 0 by construction (see the module docstring)


@dataclass
class Plan:
    layers: list[LayerPlan] = field(default_factory=list)
    identities: list[tuple[str, nn.Module]] = field(default_factory=list)
    first: str | None = None
    sequence: list[str] = field(default_factory=list)  # traced layer calls, in order
    traced: bool = True  # a tracing forward ran for this plan (False: from the cache)
    ops: dict[str, int] = field(default_factory=dict)  # traced functional ops, by kind

    @property
    def merges(self) -> dict[str, str]:
        """``{layer name: merged BatchNorm name}``."""
        return {lp.name: lp.merged for lp in self.layers if lp.merged}

    def rules(self) -> dict[str, str]:
        return {lp.name: type(lp.rule).__name__ for lp in self.layers}


def needs_rule(module: nn.Module) -> bool:
    """Layers that carry an LRP rule: affine layers and any other module with its own
    ``weight`` parameter. Normalisation layers (their ``F.layer_norm``/``F.group_norm``
    call is handled by :mod:`.functional`) and modules whose own parameters are not a
    ``weight`` (a layer scale ``lambda`` or ``gamma`` on a ConvNeXt block, whose use in the
    block's ``forward`` -- ``lambda * x`` -- is a functional op with a rule, and any other
    use is refused there) do not."""
    if isinstance(module, CONV + LINEAR + BATCHNORM):
        return True
    if isinstance(module, _ACTIVATION_MODULES + STAT_NORM_MODULES):
        return False
    return isinstance(module._parameters.get("weight"), torch.Tensor)


def check_rules(clf: Classifier, composite: Composite,
                modules: list[tuple[str, nn.Module]] | None = None) -> None:
    """Every layer with parameters must have a rule (or an error that says how to add one).
    ``modules``: ``clf.module.named_modules()``, when the caller has it already."""
    for name, module in modules if modules is not None else clf.module.named_modules():
        if not needs_rule(module) or isinstance(module, BATCHNORM):
            continue
        if composite.rule_for(name, module, first=False) is None and not (
                composite.first is not None and isinstance(module, composite.first_types)):
            kind = type(module).__name__
            raise NotApplicableError(
                f"LRP has no rule for layer {name!r} ({kind}). If it is linear in its input "
                f"(z = f(x; weight, bias)), supply a rule by name, "
                f"composite={{'{name}': 'epsilon'}}, or by type, "
                f"composite={{{type(module).__module__}.{kind}: 'epsilon'}} (rules: epsilon, "
                f"zplus, gamma, alpha2_beta1, flat, wsquare, zbox); otherwise use a gradient "
                f"or occlusion method."
            )


class _Tracer:
    def __init__(self, model: nn.Module) -> None:
        self.names = {m: n for n, m in model.named_modules()}
        self.stack: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.producer: dict[int, int] = {}
        self.consumers: Counter[int] = Counter()
        self.keep: list[Any] = []
        self.mode: LRPMode | None = None
        self.nonneg: dict[int, bool] = {}

    def where(self) -> str:
        inner = next((n for n in reversed(self.stack) if n), "")
        return f"module {inner!r}" if inner else "the model's own forward()"

    def pre(self, module: nn.Module, inputs: tuple) -> None:
        self.stack.append(self.names[module])
        if needs_rule(module):
            assert self.mode is not None
            self.mode.paused += 1
            x = inputs[0] if inputs else None
            self.keep.append(x)
            self.consumers[id(x)] += 1
            self.events.append({"name": self.names[module], "module": module, "in": id(x),
                                "nonneg": self.nonneg.get(id(x), False),
                                "spatial": isinstance(x, torch.Tensor) and x.dim() > 2})

    def post(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        self.stack.pop()
        if needs_rule(module):
            assert self.mode is not None
            self.mode.paused -= 1
            event = next(e for e in reversed(self.events) if e["module"] is module)
            self.keep.append(output)
            self.producer[id(output)] = self.events.index(event)
            self.nonneg[id(output)] = False

    def observe(self, func: Any, args: tuple, kwargs: dict, result: Any) -> None:
        for a in args:
            for t in a if isinstance(a, (list, tuple)) else (a,):
                if isinstance(t, torch.Tensor):
                    self.consumers[id(t)] += 1
                    self.keep.append(t)
        self.keep.append(result)
        name = getattr(func, "__name__", "")
        if name == "__setitem__":  # x[i] = v writes into x
            v = args[2] if len(args) > 2 else None
            ok = self.nonneg.get(id(args[0]), False) and (
                self.nonneg.get(id(v), False) if isinstance(v, torch.Tensor)
                else isinstance(v, (int, float)) and v >= 0)
            self.nonneg[id(args[0])] = ok
            return
        nonneg = self._nonneg(name, args, kwargs)
        for t in result if isinstance(result, (list, tuple)) else (result,):
            if isinstance(t, torch.Tensor):  # in-place ops return their input: updated
                self.nonneg[id(t)] = nonneg

    def _nonneg(self, name: str, args: tuple, kwargs: dict) -> bool:
        """Whether the op's result is >= 0 whatever the data."""
        if name in _NONNEG:
            return True
        if name in _NONNEG_IF_LOW:
            low = args[1] if len(args) > 1 else kwargs.get(_NONNEG_IF_LOW[name])
            return isinstance(low, (int, float)) and not isinstance(low, bool) and low >= 0
        if name not in ROUTES and name not in NORMS:
            return False
        if name == "pad":
            value = args[3] if len(args) > 3 else kwargs.get("value")
            if value is not None and value < 0:
                return False
        data = [t for a in args for t in (a if isinstance(a, (list, tuple)) else (a,))
                if isinstance(t, torch.Tensor) and t.is_floating_point()]
        return bool(data) and all(self.nonneg.get(id(t), False) for t in data)


@dataclass
class Trace:
    """What one traced forward found (names only, no tensors or modules): the rule-bearing
    layer calls in execution order and ``into`` = ``{merged BatchNorm: its layer}``."""

    calls: list[str]
    into: dict[str, str]
    nonneg: set[str] = field(default_factory=set)  # layers whose input is always >= 0
    ops: dict[str, int] = field(default_factory=dict)  # functional ops handled, by kind
    spatial: set[str] = field(default_factory=set)  # layers called on feature maps

    def order(self) -> list[str]:
        """Each layer once, in order of its first call."""
        return list(dict.fromkeys(self.calls))


def trace(clf: Classifier, x: torch.Tensor, activations: str = "pass",
          sum_epsilon: float = 1e-6) -> Trace:
    """One forward of ``x[:1]`` inside ``clf.patched()``: which layers run, in what order,
    and which BatchNorms can be merged (see the module docstring)."""
    tracer = _Tracer(clf.module)
    mode = LRPMode(activations, sum_epsilon, tracer.observe, tracer.where)
    tracer.mode = mode
    with clf.patched() as patch, torch.enable_grad():
        patch.set_requires_grad(False)
        for module in tracer.names:
            patch.forward_pre_hook(module, tracer.pre)
            patch.forward_hook(module, tracer.post)
        with mode:
            clf(x[:1].detach().requires_grad_(True))
    events = tracer.events
    calls = Counter(e["name"] for e in events)
    into: dict[str, str] = {}
    for e in events:
        module = e["module"]
        src_idx = tracer.producer.get(e["in"])
        if not isinstance(module, BATCHNORM) or src_idx is None:
            continue
        src = events[src_idx]
        ok = (isinstance(src["module"], CONV + LINEAR) and tracer.consumers[e["in"]] == 1
              and calls[src["name"]] == 1 and calls[e["name"]] == 1
              and module.running_mean is not None
              and src["module"].weight.shape[0] == module.num_features)
        if ok:
            into[e["name"]] = src["name"]
    signed = {e["name"] for e in events if not e["nonneg"]}
    return Trace([e["name"] for e in events], into,
                 {e["name"] for e in events} - signed, dict(mode.counts),
                 {e["name"] for e in events if e["spatial"]})


OpFactory = Callable[[str, nn.Module, "str | None", "nn.Module | None"], AffineOp]


def _make_op(name: str, module: nn.Module, bn_name: str | None, bn: nn.Module | None
             ) -> AffineOp:
    return make_op(module, bn)


def assign(clf: Classifier, x: torch.Tensor, composite: Composite, found: Trace,
           modules: dict[str, nn.Module], op_for: OpFactory = _make_op) -> Plan:
    """Rules, merges and identities for ``composite`` from a :class:`Trace`; ``op_for``
    builds (or looks up) each layer's op with its merged BatchNorm."""
    order = found.order()
    first = None
    if composite.first is not None:
        first = next((n for n in order if isinstance(modules[n], composite.first_types)), None)
    merged = {src: bn for bn, src in found.into.items()}
    result = Plan(first=first, sequence=found.calls, ops=found.ops)
    for name in order:
        module = modules[name]
        if name in found.into:
            result.identities.append((name, module))
            continue
        rule = composite.rule_for(name, module, first=name == first,
                                  spatial=name in found.spatial)
        if rule is None:
            raise NotApplicableError(f"LRP has no rule for layer {name!r} "
                                     f"({type(module).__name__})")
        if isinstance(rule, ZBox) and (rule.low is None or rule.high is None):
            like = x[(slice(0, 1), slice(None)) + (slice(0, 1),) * (x.dim() - 2)]
            low, high = clf.spec.bounds(like)
            rule = replace(rule, low=low, high=high)
        bn_name = merged.get(name)
        bn = modules[bn_name] if bn_name is not None else None
        result.layers.append(LayerPlan(name, module, rule, op_for(name, module, bn_name, bn),
                                       bn_name, name in found.nonneg))
    return result


def plan(clf: Classifier, x: torch.Tensor, composite: Composite) -> Plan:
    """Trace one forward of ``x[:1]`` and assign rules, merges and identities (uncached;
    :func:`~.cache.cached_plan` reuses the trace and the merged weights)."""
    check_rules(clf, composite)
    found = trace(clf, x, composite.activations, composite.sum_epsilon)
    return assign(clf, x, composite, found, dict(clf.module.named_modules()))
