"""Run the model with LRP rules in place of its gradients.

Inside ``clf.patched()`` each rule-bearing layer's ``forward`` is replaced (an instance
attribute, removed on exit) by an autograd function whose forward is the layer's affine
map (BatchNorm merged in) and whose backward is the rule; merged BatchNorms run as the
identity; :class:`~.functional.LRPMode` handles activations, sums and pooling. The value
that flows backward *is* the relevance (Zennit's design), so one
``torch.autograd.grad(logits, x, grad_outputs=R_out)`` gives the input relevance for any
initial relevance vector ``R_out``, and unhooked routing ops (slicing, cat, max pooling)
move it by their ordinary gradient. Parameters never require grad during the pass, and
the model's parameters are never written to.

The plan comes from :func:`~.cache.cached_plan`. Each pass records the layer calls; if
they or the counts of functional ops (activations, sums, pooling) differ from the traced
ones, or a merged BatchNorm does not read its layer's output (the model's forward changed
since the trace), the pass is rerun with a fresh trace.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from ...model import Classifier
from .cache import cached_plan
from .canonizers import LayerPlan, Plan
from .composites import Composite
from .functional import LRPMode
from .ops import AffineOp
from .rules import LayerCall, Rule

Tensor = torch.Tensor


class _RuleFn(torch.autograd.Function):
    """Forward: the layer's affine map; backward: its LRP rule."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, op: AffineOp, rule: Rule, nonneg: bool,
                record: _Record) -> Tensor:
        out = op.forward(x, op.weight, op.bias)
        ctx.save_for_backward(x)
        ctx.op, ctx.rule, ctx.prepared = op, rule, rule.prepare(op, x, out)
        ctx.call, ctx.record = LayerCall(nonneg), record
        return out

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple[Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        ctx.call.store = ctx.record.more
        return (ctx.rule.backward(ctx.op, x, r, ctx.prepared, ctx.call),
                None, None, None, None)


class _Record:
    """The layer calls of one LRP pass, checked against the traced plan."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.outputs: dict[str, Tensor] = {}
        self.merged_ok = True
        self.more = False  # more backward passes follow the current one

    def matches(self, the_plan: Plan, mode: LRPMode) -> bool:
        return (self.merged_ok and self.calls == the_plan.sequence
                and dict(mode.counts) == the_plan.ops)


def _rule_forward(layer: LayerPlan, mode: LRPMode, record: _Record):
    name, op, rule, keep = layer.name, layer.op, layer.rule, layer.merged is not None
    nonneg = layer.nonneg

    def forward(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        record.calls.append(name)
        mode.paused += 1
        try:
            out = _RuleFn.apply(x, op, rule, nonneg, record)
        finally:
            mode.paused -= 1
        if keep:
            record.outputs[name] = out
        return out

    return forward


def _identity(name: str, src: str, record: _Record):
    def forward(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        record.calls.append(name)
        if record.outputs.get(src) is not x:
            record.merged_ok = False
        return x

    return forward


@dataclass
class Graph:
    """The forward pass of one LRP run: input, logits, plan, functional-op counts."""

    x: Tensor
    logits: Tensor
    plan: Plan
    mode: LRPMode
    record: _Record
    forwards: int = 1  # forward passes run, the trace(s) included

    def relevance(self, r_out: Tensor, retain: bool = True) -> Tensor:
        """Input relevance ``[B, C, H, W]`` for output relevance ``r_out [B, classes]``;
        ``retain=False`` on the last pass (frees the graph)."""
        self.record.more = retain
        (rel,) = torch.autograd.grad(self.logits, self.x, r_out.to(self.logits.dtype),
                                     retain_graph=retain)
        return rel


@contextmanager
def lrp_graph(clf: Classifier, x: Tensor, composite: Composite) -> Iterator[Graph]:
    """Plan (cached), canonize, run the forward pass with rules; restore the model on
    exit."""
    forwards = 0
    for fresh in (False, True):  # a second round only after a stale cached plan
        the_plan = cached_plan(clf, x, composite, fresh=fresh)
        forwards += 1 + the_plan.traced
        mode = LRPMode(composite.activations, composite.sum_epsilon,
                       gate_rule=composite.gate_rule, norm_rule=composite.norm_rule)
        record = _Record()
        xg = x.detach().requires_grad_(True)
        with clf.patched() as patch, torch.enable_grad():
            patch.set_requires_grad(False)
            for layer in the_plan.layers:
                patch.set_attribute(layer.module, "forward", _rule_forward(layer, mode, record))
            src = {lp.merged: lp.name for lp in the_plan.layers if lp.merged}
            for name, bn in the_plan.identities:
                patch.set_attribute(bn, "forward", _identity(name, src[name], record))
            with mode:
                logits = clf(xg)
            # a fresh trace that still differs: the forward is not repeatable (as before
            # caching, the pass is used as it is)
            if the_plan.traced or record.matches(the_plan, mode):
                record.outputs.clear()
                yield Graph(xg, logits, the_plan, mode, record, forwards)
                return
