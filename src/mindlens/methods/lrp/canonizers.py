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
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from ...errors import NotApplicableError
from ...model import Classifier
from .composites import Composite
from .functional import LRPMode
from .ops import BATCHNORM, CONV, LINEAR, AffineOp, make_op
from .rules import Rule, ZBox

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


@dataclass
class Plan:
    layers: list[LayerPlan] = field(default_factory=list)
    identities: list[tuple[str, nn.Module]] = field(default_factory=list)
    first: str | None = None

    @property
    def merges(self) -> dict[str, str]:
        """``{layer name: merged BatchNorm name}``."""
        return {lp.name: lp.merged for lp in self.layers if lp.merged}

    def rules(self) -> dict[str, str]:
        return {lp.name: type(lp.rule).__name__ for lp in self.layers}


def needs_rule(module: nn.Module) -> bool:
    """Layers that carry an LRP rule: affine layers and anything else with parameters."""
    if isinstance(module, CONV + LINEAR + BATCHNORM):
        return True
    if isinstance(module, _ACTIVATION_MODULES):
        return False
    return next(iter(module.parameters(recurse=False)), None) is not None


def check_rules(clf: Classifier, composite: Composite) -> None:
    """Every layer with parameters must have a rule (or an error that says how to add one)."""
    for name, module in clf.module.named_modules():
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
            self.events.append({"name": self.names[module], "module": module, "in": id(x)})

    def post(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        self.stack.pop()
        if needs_rule(module):
            assert self.mode is not None
            self.mode.paused -= 1
            event = next(e for e in reversed(self.events) if e["module"] is module)
            self.keep.append(output)
            self.producer[id(output)] = self.events.index(event)

    def observe(self, func: Any, args: tuple, result: Any) -> None:
        for a in args:
            for t in a if isinstance(a, (list, tuple)) else (a,):
                if isinstance(t, torch.Tensor):
                    self.consumers[id(t)] += 1
                    self.keep.append(t)
        self.keep.append(result)


def plan(clf: Classifier, x: torch.Tensor, composite: Composite) -> Plan:
    """Trace one forward of ``x[:1]`` and assign rules, merges and identities."""
    check_rules(clf, composite)
    tracer = _Tracer(clf.module)
    mode = LRPMode(composite.activations, composite.sum_epsilon, tracer.observe, tracer.where)
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
    merged: dict[str, nn.Module] = {}
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
            merged[src["name"]] = module
            into[e["name"]] = src["name"]
    first = None
    if composite.first is not None:
        first = next((e["name"] for e in events
                      if isinstance(e["module"], composite.first_types)), None)
    result = Plan(first=first)
    seen: set[str] = set()
    for e in events:
        name, module = e["name"], e["module"]
        if name in seen:
            continue
        seen.add(name)
        if name in into:
            result.identities.append((name, module))
            continue
        rule = composite.rule_for(name, module, first=name == first)
        if rule is None:
            raise NotApplicableError(f"LRP has no rule for layer {name!r} "
                                     f"({type(module).__name__})")
        if isinstance(rule, ZBox) and (rule.low is None or rule.high is None):
            like = x[(slice(0, 1), slice(None)) + (slice(0, 1),) * (x.dim() - 2)]
            low, high = clf.spec.bounds(like)
            rule = replace(rule, low=low, high=high)
        bn = merged.get(name)
        result.layers.append(LayerPlan(name, module, rule, make_op(module, bn),
                                       into_name(into, name)))
    return result


def into_name(into: dict[str, str], layer: str) -> str | None:
    return next((bn for bn, src in into.items() if src == layer), None)
