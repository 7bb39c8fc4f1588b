"""The one reversible way in which mindlens changes a user's model.

Every method that hooks a module, swaps a module or flips an attribute does it through a
:class:`ModelPatch`, a context manager that undoes everything on exit, also when the body
raised: hooks removed, modules and attributes put back, each module's train/eval mode and
each parameter's ``requires_grad`` restored. Methods never call ``backward()`` (they use
``torch.autograd.grad``), so no ``.grad`` is left on the parameters either.

Concurrency: a patch changes the model for everyone who holds it, so each model has one
re-entrant lock (:func:`model_lock`, kept in a weak table beside the model, never on it)
and a :class:`ModelPatch` holds it from entry to exit. Patched sections on the same model
therefore run one after another (a thread that is already inside may nest patches);
sections on different models run in parallel. Separate processes share nothing and need
no lock.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

_MISSING = object()

_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The re-entrant lock of ``model``: whoever runs, patches or caches something for this
    model holds it (``with model_lock(model): ...``). Created on first use; it lives as
    long as the model and is never stored on it."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


class ModelPatch:
    """Reversible changes to ``model``; use as ``with ModelPatch(model) as patch: ...``.

    On entry the model is put in eval mode (every method assumes it; BatchNorm in train
    mode couples the samples of a batch). From entry to exit the patch holds the model's
    :func:`model_lock`, so no other thread sees (or saves) the patched state.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._handles: list[Any] = []
        self._undo: list[Callable[[], None]] = []
        self._training: list[tuple[nn.Module, bool]] = []
        self._requires_grad: list[tuple[nn.Parameter, bool]] = []

    def __enter__(self) -> ModelPatch:
        self._lock = model_lock(self.model)
        self._lock.acquire()
        try:
            self._training = [(m, m.training) for m in self.model.modules()]
            self._requires_grad = [(p, p.requires_grad) for p in self.model.parameters()]
            if any(mode for _, mode in self._training):
                self.model.eval()
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._restore()
        finally:
            self._lock.release()

    def _restore(self) -> None:
        for handle in reversed(self._handles):
            handle.remove()
        self._handles.clear()
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        for module, mode in self._training:
            if module.training != mode:  # nn.Module.__setattr__ is slow: only what changed
                module.training = mode
        for param, flag in self._requires_grad:
            param.requires_grad_(flag)

    # -- hooks ---------------------------------------------------------------------------
    def forward_hook(self, module: nn.Module, hook: Callable[..., Any]) -> None:
        """Register ``hook(module, inputs, output)`` until the patch ends."""
        self._handles.append(module.register_forward_hook(hook))

    def forward_pre_hook(self, module: nn.Module, hook: Callable[..., Any]) -> None:
        """Register ``hook(module, inputs)`` until the patch ends."""
        self._handles.append(module.register_forward_pre_hook(hook))

    # -- structural changes --------------------------------------------------------------
    def set_attribute(self, obj: Any, name: str, value: Any) -> None:
        """Set ``obj.name = value`` until the patch ends (also for new attributes)."""
        old = obj.__dict__.get(name, _MISSING) if hasattr(obj, "__dict__") else _MISSING
        if isinstance(obj, nn.Module):  # submodules, parameters, buffers live in dicts
            for registry in (obj._modules, obj._parameters, obj._buffers):
                if name in registry:
                    old = registry[name]
        setattr(obj, name, value)

        def undo() -> None:
            if old is _MISSING:
                delattr(obj, name)
            else:
                setattr(obj, name, old)

        self._undo.append(undo)

    def replace_module(self, name: str, new: nn.Module) -> nn.Module:
        """Swap the submodule at dotted ``name`` for ``new``; return the original."""
        parent_name, _, child = name.rpartition(".")
        parent = self.model.get_submodule(parent_name) if parent_name else self.model
        old = parent._modules[child]
        self.set_attribute(parent, child, new)
        assert old is not None
        return old

    def set_requires_grad(self, flag: bool) -> None:
        """Set ``requires_grad`` on every parameter until the patch ends."""
        for param, _ in self._requires_grad:
            param.requires_grad_(flag)


def has_hooks(model: nn.Module) -> bool:
    """True when any module of ``model`` carries a forward or backward hook."""
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return any(len(getattr(m, n, {})) for m in model.modules() for n in names)


def is_scripted(model: nn.Module) -> bool:
    """True for TorchScript modules, which do not run Python hooks."""
    return isinstance(model, torch.jit.ScriptModule)
