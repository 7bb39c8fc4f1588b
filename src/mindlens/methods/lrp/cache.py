"""The LRP plan, cached between calls on the same model.

Planning (:mod:`.canonizers`) costs one extra forward pass (the trace) plus the BatchNorm
merging; at batch 1 that is as much as the LRP pass itself. Two things are kept per model:

- the :class:`~.canonizers.Trace` (which layers run, in what order, which BatchNorms
  merge), per input shape ``x.shape[1:]``, dtype, device and activation mode. It is reused
  only while the model's module tree is the same objects under the same names; each LRP
  pass also checks that the layers run in the traced order and that every merged
  BatchNorm reads its layer's output (:mod:`.core`), and traces again otherwise;
- each layer's :class:`~.ops.AffineOp` (merged weights, and rule-derived tensors such as
  ``w+`` in :meth:`~.ops.AffineOp.derived`), keyed on the identity, ``data_ptr()`` and
  ``_version`` of every parameter and buffer of the layer and of its merged BatchNorm, and
  on the BatchNorm's ``eps``. Any in-place write (``optimizer.step()``,
  ``load_state_dict``, ``p.add_()`` under ``no_grad``) bumps ``_version``; assigning a new
  tensor changes its identity. The source tensors are kept with the op, so their memory
  cannot be reused by a new tensor at the same address. Writes through ``p.data`` bypass
  version counters (as they bypass autograd's own checks): call :func:`clear_cache` after
  them.

The cache is a :class:`weakref.WeakKeyDictionary` on the model, and ops reference their
modules weakly, so it never keeps a model alive; nothing is stored on the model itself.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...model import Classifier
from .canonizers import Plan, Trace, assign, check_rules, trace
from .composites import Composite
from .ops import BATCHNORM, AffineOp, make_op

_Key = tuple[Any, ...]


@dataclass
class _ModelCache:
    traces: dict[_Key, tuple[Trace, list[tuple[str, weakref.ref]]]] = field(
        default_factory=dict)
    ops: dict[tuple[str, str | None], tuple[_Key, list[torch.Tensor], AffineOp]] = field(
        default_factory=dict)


_CACHE: weakref.WeakKeyDictionary[nn.Module, _ModelCache] = weakref.WeakKeyDictionary()


def clear_cache() -> None:
    """Forget every cached plan (e.g. after changing weights through ``p.data``)."""
    _CACHE.clear()


def _tensors(module: nn.Module) -> list[torch.Tensor]:
    return [t for t in (*module._parameters.values(), *module._buffers.values())
            if t is not None]


def _fingerprint(modules: tuple[nn.Module, ...]) -> _Key:
    key: list[Any] = []
    for m in modules:
        key.append((id(m), getattr(m, "eps", None) if isinstance(m, BATCHNORM) else None))
        key.extend((id(t), t.data_ptr(), t._version) for t in _tensors(m))
    return tuple(key)


def _same_tree(modules: list[tuple[str, nn.Module]],
               refs: list[tuple[str, weakref.ref]]) -> bool:
    return len(modules) == len(refs) and all(
        name == ref_name and ref() is module
        for (name, module), (ref_name, ref) in zip(modules, refs, strict=True))


def _trace_key(x: torch.Tensor, composite: Composite) -> _Key:
    return (tuple(x.shape[1:]), x.dtype, x.device, composite.activations)


def cached_plan(clf: Classifier, x: torch.Tensor, composite: Composite,
                fresh: bool = False) -> Plan:
    """The :class:`~.canonizers.Plan` for ``composite`` on ``clf`` and inputs shaped like
    ``x``; traces only when nothing valid is cached (or ``fresh``)."""
    model = clf.module
    modules = list(model.named_modules())
    check_rules(clf, composite, modules)
    entry = _CACHE.get(model)
    if entry is None:
        entry = _CACHE[model] = _ModelCache()
    key = _trace_key(x, composite)
    hit = None if fresh else entry.traces.get(key)
    if hit is not None and not _same_tree(modules, hit[1]):
        entry.traces.clear()
        entry.ops.clear()
        hit = None
    if hit is None:
        found = trace(clf, x, composite.activations, composite.sum_epsilon)
        entry.traces[key] = (found, [(n, weakref.ref(m)) for n, m in modules])
    else:
        found = hit[0]

    def op_for(name: str, module: nn.Module, bn_name: str | None, bn: nn.Module | None
               ) -> AffineOp:
        mods = (module,) if bn is None else (module, bn)
        fp = _fingerprint(mods)
        cached = entry.ops.get((name, bn_name))
        if cached is not None and cached[0] == fp:
            return cached[2]
        op = make_op(module, bn)
        keep = [t.detach() for m in mods for t in _tensors(m)]
        entry.ops[(name, bn_name)] = (fp, keep, op)
        return op

    result = assign(clf, x, composite, found, dict(modules), op_for)
    result.traced = hit is None
    return result

