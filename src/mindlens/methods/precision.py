"""Lower precision for approximate methods: a float32 model run in bfloat16 on a
converted copy (the user's model is never changed).

The copy is made once per model and dtype and kept while the model stays as it was (same
structure, same tensors on the same devices, same sums: ``.data`` writes count too). It
shares the model's hooks (the same callables, so a hook's state stays one), and is tried
on the input once when it is made: a model that cannot run in the lower precision (a
tensor attribute that ``.to()`` does not convert, a forward that casts to float32) runs
in its own dtype instead, with a warning.
"""

from __future__ import annotations

import copy
import itertools
import warnings
import weakref
from typing import Any

import torch
from torch import nn

from ..model import Classifier

CHOICES = ("auto", "float32", "bfloat16")

#: the hook dictionaries of ``nn.Module`` (shared with the copy, not copied)
_HOOK_DICTS = frozenset(k for k, v in vars(nn.Module()).items()
                        if "hooks" in k and isinstance(v, dict))


def native_bfloat16(device: torch.device) -> bool:
    """Does ``device`` compute bfloat16 natively (oneDNN with AVX-512 BF16 or AMX on a CPU,
    a CUDA GPU that supports it)?"""
    try:
        if device.type == "cpu":
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        if device.type == "cuda":
            return bool(torch.cuda.is_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
    return False


def choose(choice: str, clf: Classifier) -> torch.dtype:
    """The dtype for ``precision=choice``; ``"auto"``: bfloat16 for a float32 model on a
    device that computes it natively, else the model's own dtype."""
    if choice == "float32":
        return torch.float32
    if choice == "bfloat16":
        return torch.bfloat16
    if clf.dtype == torch.float32 and native_bfloat16(clf.device):
        return torch.bfloat16
    return clf.dtype


class Converted(nn.Module):
    """A copy of ``module`` in ``dtype`` that returns logits in ``out_dtype``."""

    def __init__(self, module: nn.Module, dtype: torch.dtype, out_dtype: torch.dtype) -> None:
        super().__init__()
        memo: dict[int, Any] = {id(v): type(v)(v) for m in module.modules()
                                for k, v in vars(m).items() if k in _HOOK_DICTS}
        self.inner = copy.deepcopy(module, memo).to(dtype).eval()
        self.out_dtype = out_dtype

    def forward(self, x: Any) -> Any:
        out = self.inner(x)
        if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
            out = out[0]
        return out.to(self.out_dtype) if isinstance(out, torch.Tensor) else out


_COPIES: weakref.WeakKeyDictionary[nn.Module, dict[torch.dtype, tuple[Any, ...]]] = \
    weakref.WeakKeyDictionary()


def _state(module: nn.Module) -> tuple[Any, torch.Tensor | None]:
    tensors = list(itertools.chain(module.parameters(), module.buffers()))
    with torch.no_grad():
        sums = (torch.stack([t.detach().sum(dtype=torch.float64).cpu() for t in tensors])
                if tensors else None)
    key = (repr(module), tuple((id(t), str(t.device), t.dtype, tuple(t.shape))
                               for t in tensors))
    return key, sums


def at_precision(clf: Classifier, x: torch.Tensor, base: torch.Tensor, dtype: torch.dtype
                 ) -> tuple[Classifier, torch.Tensor, torch.Tensor, torch.dtype]:
    """The classifier, input and baseline in ``dtype``, and the dtype actually used."""
    if dtype == clf.dtype:
        return clf, x, base, dtype
    key, sums = _state(clf.module)
    cached = _COPIES.setdefault(clf.module, {}).get(dtype)
    fresh = cached is not None and cached[0] == key and (
        (cached[1] is None and sums is None) or
        (cached[1] is not None and sums is not None and torch.equal(cached[1], sums)))
    if not fresh:
        converted: Converted | None = Converted(clf.module, dtype, clf.dtype)
        error = ""
        try:
            with torch.inference_mode():
                converted(x[:1].to(dtype))
        except (RuntimeError, TypeError, ValueError) as e:
            converted, error = None, str(e).splitlines()[0] if str(e) else type(e).__name__
        cached = (key, sums, converted, error)
        _COPIES[clf.module][dtype] = cached
    if cached[2] is None:
        warnings.warn(f"this model cannot run in {str(dtype).replace('torch.', '')} on a "
                      f"converted copy ({cached[3]}); it runs in its own "
                      f"{str(clf.dtype).replace('torch.', '')}", stacklevel=3)
        return clf, x, base, clf.dtype
    twin = copy.copy(clf)
    twin.module = cached[2]
    return twin, x.to(dtype), base.to(dtype), dtype
