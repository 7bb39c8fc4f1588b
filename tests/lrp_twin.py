"""The "detached twin" oracle of spec ``methods-more.md`` section 19.9: the model run under a
:class:`~torch.overrides.TorchFunctionMode` in which

- every self-gating activation ``f(x) = x g(x)`` (SiLU, GELU, Hardswish, Mish) becomes
  ``x * g(x).detach()`` (identity rule in gradient x input form),
- every product of two input-dependent tensors ``x * s`` detaches the factor with fewer
  elements (the broadcast gate: gate treated as a constant),
- every ``layer_norm``/``group_norm`` is computed by hand with ``sigma`` (and, if asked,
  the mean) detached.

Its ordinary input gradient times the input is then the intended LRP-0 relevance. This is
the gradient x input formulation (LXT "efficient", Ali et al. 2022's code), written here
independently of mindlens' relevance-as-gradient implementation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

Tensor = torch.Tensor


def _gate(name: str, x: Tensor, kwargs: dict) -> Tensor:
    if name == "silu":
        return torch.sigmoid(x)
    if name == "gelu":
        if kwargs.get("approximate", "none") == "tanh":
            return 0.5 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
        return 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    if name == "hardswish":
        return (x + 3).clamp(0, 6) / 6
    assert name == "mish"
    return torch.tanh(F.softplus(x))


def _norm(x: Tensor, dims: tuple[int, ...], eps: float, detach_mean: bool) -> Tensor:
    mu = x.mean(dims, keepdim=True)
    sigma = ((x - mu) ** 2).mean(dims, keepdim=True).add(eps).sqrt().detach()
    return (x - (mu.detach() if detach_mean else mu)) / sigma


def _args(args: tuple, kwargs: dict, names: tuple[str, ...], eps: float) -> list:
    """Positional-or-keyword arguments of ``F.layer_norm``/``F.group_norm``."""
    out = [args[i] if i < len(args) else kwargs.get(n) for i, n in enumerate(names)]
    return [*out[:-1], eps if out[-1] is None else out[-1]]


class DetachedTwin(TorchFunctionMode):
    def __init__(self, detach_mean: bool = False) -> None:
        super().__init__()
        self.detach_mean = detach_mean
        self.seen: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in ("silu", "gelu", "hardswish", "mish"):
            self.seen.add(name)
            x = args[0]
            return x * _gate(name, x, kwargs).detach()
        if name in ("mul", "__mul__", "__rmul__") and len(args) == 2 and all(
                isinstance(a, Tensor) and a.requires_grad for a in args):
            self.seen.add("gate")
            a, b = args
            return a * b.detach() if b.numel() < a.numel() else a.detach() * b
        if name == "layer_norm":
            self.seen.add(name)
            x, shape, w, b, eps = _args(args, kwargs, ("input", "normalized_shape", "weight",
                                                       "bias", "eps"), 1e-5)
            y = _norm(x, tuple(range(x.dim() - len(shape), x.dim())), eps, self.detach_mean)
            y = y if w is None else y * w
            return y if b is None else y + b
        if name == "group_norm":
            self.seen.add(name)
            x, groups, w, b, eps = _args(args, kwargs, ("input", "num_groups", "weight",
                                                        "bias", "eps"), 1e-5)
            y = _norm(x.reshape(x.shape[0], groups, -1), (2,), eps, self.detach_mean)
            shape = (1, -1) + (1,) * (x.dim() - 2)
            y = y.reshape(x.shape)
            y = y if w is None else y * w.reshape(shape)
            return y if b is None else y + b.reshape(shape)
        return func(*args, **kwargs)


def twin_forward(model: torch.nn.Module, x: Tensor, detach_mean: bool = False) -> Tensor:
    with DetachedTwin(detach_mean):
        return model(x)


def twin_relevance(model: torch.nn.Module, x: Tensor, classes: Tensor,
                   detach_mean: bool = False) -> Tensor:
    """``x * d z_c / dx`` of the twin, summed over channels, ``[B, H, W]``; ``z_c`` the
    target logit (the relevance LRP starts from with ``init="logit"``)."""
    xg = x.detach().clone().requires_grad_(True)
    z = twin_forward(model, xg, detach_mean).gather(1, classes[:, None]).sum()
    (g,) = torch.autograd.grad(z, xg)
    return (g * x).sum(1)
