"""LRP rules for affine layers, as modified backward passes.

Every rule turns the relevance ``r`` at a layer's output into relevance at its input with
the gradient x input identity (Montavon et al. 2019, "Layer-wise relevance propagation: an
overview", section 10.2): for ``z = rho(W) x' + rho(b)`` and ``s = r / stab(z)`` (fixed),
``R_in = x' * rho(W)^T s``. A rule is a frozen dataclass (no per-module state; the
per-call tensors live in the autograd graph), written with the two primitives of
:class:`~.ops.AffineOp`: ``forward`` with modified parameters and ``vjp``. Signed-input
variants follow Zennit's generalised definitions (``x+`` with ``w+``, ``x-`` with ``w-``);
when a layer's input is non-negative (after a ReLU) the ``x-`` terms are skipped.

``stab(z) = z + eps * sign(z)`` with ``sign(0) := +1`` (Zennit's default stabiliser).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ...errors import InputError
from .ops import AffineOp

Tensor = torch.Tensor


def stabilize(z: Tensor, eps: float) -> Tensor:
    """``z + eps * sign(z)``, ``sign(0) = +1``."""
    return z + torch.where(z >= 0, eps, -eps).to(z.dtype)


def _split(x: Tensor, nonneg: bool = False) -> tuple[Tensor, Tensor | None]:
    """``(x+, x-)``; ``x-`` is ``None`` when ``x >= 0`` everywhere (known beforehand when
    ``nonneg``: then no pass over ``x`` is needed)."""
    if not nonneg and bool(x.min() < 0):
        return x.clamp(min=0), x.clamp(max=0)
    return x, None


def _pos(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(min=0)


def _neg(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(max=0)


def _pos_neg(op: AffineOp) -> tuple[Tensor, Tensor]:
    """``(w+, w-)``, computed once per op."""
    return (op.derived("w+", lambda: op.weight.clamp(min=0)),
            op.derived("w-", lambda: op.weight.clamp(max=0)))


@dataclass
class LayerCall:
    """What the LRP pass tells :meth:`Rule.backward` about one call of a layer:
    ``nonneg``, its input is ``>= 0`` by construction (traced), and ``memo``, kept across
    the backward passes of one forward pass (top-k targets, the contrastive variants) for
    terms that depend on the input only, such as a rule's denominator. ``store`` is False
    on the last backward pass: nothing new is kept."""

    nonneg: bool = False
    memo: dict[Hashable, Tensor] = field(default_factory=dict)
    store: bool = False

    def get(self, key: Hashable, make: Callable[[], Tensor]) -> tuple[Tensor, bool]:
        """``(value, owned)``; ``owned``: not kept, the caller may overwrite it in place."""
        if key in self.memo:
            return self.memo[key], False
        value = make()
        if self.store:
            self.memo[key] = value
        return value, not self.store


class Rule:
    """Base class: ``prepare`` runs in the forward pass (its tensors are kept for the
    backward pass), ``relevance`` in the backward pass. The LRP pass calls ``backward``,
    which adds a :class:`LayerCall`."""

    name: ClassVar[str]

    def prepare(self, op: AffineOp, x: Tensor, out: Tensor) -> tuple[Tensor, ...]:
        return ()

    def relevance(self, op: AffineOp, x: Tensor, r: Tensor, saved: tuple[Tensor, ...]
                  ) -> Tensor:
        raise NotImplementedError

    def backward(self, op: AffineOp, x: Tensor, r: Tensor, saved: tuple[Tensor, ...],
                 call: LayerCall) -> Tensor:
        return self.relevance(op, x, r, saved)


@dataclass(frozen=True)
class Epsilon(Rule):
    """LRP-epsilon (Bach et al. 2015, eq. 58; Montavon et al. 2019, eq. 4):
    ``R_j = sum_k x_j w_jk / (z_k + eps sign(z_k)) R_k``, bias inside ``z_k``. A tiny
    ``epsilon`` gives LRP-0."""

    epsilon: float = 1e-6
    name: ClassVar[str] = "epsilon"

    def prepare(self, op: AffineOp, x: Tensor, out: Tensor) -> tuple[Tensor, ...]:
        return (stabilize(out, self.epsilon),)

    def relevance(self, op, x, r, saved):
        return op.vjp(x, op.weight, r / saved[0]).mul_(x)


@dataclass(frozen=True)
class AlphaBeta(Rule):
    """LRP-alpha-beta (Bach et al. 2015, eq. 60): ``alpha`` times the positive-contribution
    split minus ``beta`` times the negative one; ``alpha - beta = 1``. Positive
    contributions: ``x+ w+`` and ``x- w-`` plus ``b+`` (Zennit's signed version)."""

    alpha: float = 2.0
    beta: float = 1.0
    stabilizer: float = 1e-6
    name: ClassVar[str] = "alpha_beta"

    def __post_init__(self) -> None:
        if self.alpha < 0 or self.beta < 0 or abs(self.alpha - self.beta - 1.0) > 1e-12:
            raise InputError(
                f"alpha-beta needs alpha, beta >= 0 and alpha - beta = 1 (conservation); got "
                f"alpha={self.alpha}, beta={self.beta}"
            )

    def _part(self, op: AffineOp, x: Tensor, r: Tensor, positive: bool,
              xp: Tensor, xn: Tensor | None, call: LayerCall) -> Tensor:
        w_pos, w_neg = _pos_neg(op)
        wa, wb = (w_pos, w_neg) if positive else (w_neg, w_pos)

        def den() -> Tensor:
            bias = op.derived("b+" if positive else "b-",
                              lambda: _pos(op.bias) if positive else _neg(op.bias))
            z = op.forward(xp, wa, bias)
            if xn is not None:
                z.add_(op.forward(xn, wb, None))
            # every term of z has the part's sign, so stab(z) is a shift (where z = 0 all
            # contributions are 0 and the sign of the shift does not matter)
            return z.add_(self.stabilizer) if positive else z.sub_(self.stabilizer)

        z, owned = call.get(("alpha_beta", positive, self.stabilizer), den)
        s = torch.div(r, z, out=z) if owned else r / z
        rel = op.vjp(x, wa, s).mul_(xp)
        if xn is not None:
            rel.addcmul_(op.vjp(x, wb, s), xn)
        return rel

    def relevance(self, op, x, r, saved):
        return self.backward(op, x, r, saved, LayerCall())

    def backward(self, op, x, r, saved, call):
        xp, xn = _split(x, call.nonneg)
        rel = self._part(op, x, r, True, xp, xn, call)
        if self.alpha != 1.0:
            rel = rel * self.alpha
        if self.beta:
            rel = rel - self.beta * self._part(op, x, r, False, xp, xn, call)
        return rel


@dataclass(frozen=True)
class ZPlus(AlphaBeta):
    """z+ (Montavon et al. 2017, Deep Taylor Decomposition, eq. 15): alpha-beta with
    ``alpha = 1, beta = 0``, i.e. ``R_j = sum_k (x_j w_jk)+ / sum_j (x_j w_jk)+ R_k``."""

    alpha: float = 1.0
    beta: float = 0.0
    name: ClassVar[str] = "zplus"


@dataclass(frozen=True)
class Gamma(Rule):
    """Generalised LRP-gamma (Montavon et al. 2019, eq. 5; Andeol et al. 2021 for signed
    inputs, as in Zennit): outputs with ``z > 0`` split with ``x+ (w + g w+)`` and
    ``x- (w + g w-)`` (bias ``b + g b+``), outputs with ``z < 0`` with the mirrored terms;
    ``z = 0`` gets nothing."""

    gamma: float = 0.25
    stabilizer: float = 1e-6
    name: ClassVar[str] = "gamma"

    def prepare(self, op, x, out):
        return (out > 0, out < 0)

    def relevance(self, op, x, r, saved):
        return self.backward(op, x, r, saved, LayerCall())

    def _params(self, op: AffineOp) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        w, b, g = op.weight, op.bias, self.gamma
        w_up, w_dn = w + g * w.clamp(min=0), w + g * w.clamp(max=0)
        b_up = None if b is None else b + g * b.clamp(min=0)
        b_dn = None if b is None else b + g * b.clamp(max=0)
        return w_up, w_dn, b_up, b_dn

    def backward(self, op, x, r, saved, call):
        w_up, w_dn, b_up, b_dn = op.derived(("gamma", self.gamma), lambda: self._params(op))
        xp, xn = _split(x, call.nonneg)
        rel = None
        for mask, wa, wb, bias in ((saved[0], w_up, w_dn, b_up), (saved[1], w_dn, w_up, b_dn)):
            z = op.forward(xp, wa, bias)
            if xn is not None:
                z = z + op.forward(xn, wb, None)
            s = r * mask / stabilize(z, self.stabilizer)
            part = xp * op.vjp(x, wa, s)
            if xn is not None:
                part = part + xn * op.vjp(x, wb, s)
            rel = part if rel is None else rel + part
        assert rel is not None
        return rel


@dataclass(frozen=True)
class Flat(Rule):
    """Flat (Lapuschkin et al. 2019, "Unmasking Clever Hans predictors"): each output's
    relevance is spread uniformly over the inputs connected to it (padding does not
    count, bias ignored)."""

    stabilizer: float = 1e-6
    name: ClassVar[str] = "flat"

    def relevance(self, op, x, r, saved):
        ones = op.derived("ones", lambda: torch.ones_like(op.weight))
        den = op.derived(("flat", self.stabilizer, x.shape[1:], x.dtype, x.device),
                         lambda: stabilize(op.forward(torch.ones_like(x[:1]), ones, None),
                                           self.stabilizer))  # the same for every sample
        return op.vjp(x, ones, r / den)


@dataclass(frozen=True)
class WSquare(Rule):
    """w^2 (Montavon et al. 2017, eq. 12): ``R_j = sum_k w_jk^2 / sum_j w_jk^2 R_k``
    (input-independent; Zennit squares the bias too, and so do we)."""

    stabilizer: float = 1e-6
    name: ClassVar[str] = "wsquare"

    def relevance(self, op, x, r, saved):
        w2 = op.weight**2
        den = op.forward(torch.ones_like(x[:1]), w2, None if op.bias is None else op.bias**2)
        return op.vjp(x, w2, r / stabilize(den, self.stabilizer))


@dataclass(frozen=True)
class ZBox(Rule):
    """z^B (Montavon et al. 2017, eq. 16) for a pixel layer with inputs in ``[low, high]``
    (model space, per channel, broadcastable to the input):
    ``R_j = sum_k (x_j w_jk - l_j w_jk+ - h_j w_jk-) / sum_j (...) R_k``.

    ``low``/``high`` ``None``: filled from the classifier's input range
    (``clf.spec.bounds``) when the composite is bound to a model.
    """

    low: Tensor | None = None
    high: Tensor | None = None
    stabilizer: float = 1e-6
    name: ClassVar[str] = "zbox"

    def relevance(self, op, x, r, saved):
        if self.low is None or self.high is None:
            raise InputError("the zbox rule needs low and high bounds")
        w, b = op.weight, op.bias
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        low, high = self.low.to(x), self.high.to(x)
        low, high = torch.broadcast_to(low, x.shape), torch.broadcast_to(high, x.shape)
        z = op.forward(x, w, b) - op.forward(low, wp, _pos(b)) - op.forward(high, wn, _neg(b))
        s = r / stabilize(z, self.stabilizer)
        return x * op.vjp(x, w, s) - low * op.vjp(x, wp, s) - high * op.vjp(x, wn, s)


RULES: dict[str, Rule] = {
    "epsilon": Epsilon(),
    "zero": Epsilon(1e-12),
    "zplus": ZPlus(),
    "alpha1_beta0": AlphaBeta(1.0, 0.0),
    "alpha2_beta1": AlphaBeta(2.0, 1.0),
    "gamma": Gamma(),
    "flat": Flat(),
    "wsquare": WSquare(),
    "zbox": ZBox(),
}


def ensure_rule(value: Rule | str) -> Rule:
    """A rule object, or its name in :data:`RULES` (default parameters)."""
    if isinstance(value, Rule):
        return value
    if isinstance(value, str) and value in RULES:
        return RULES[value]
    raise InputError(f"unknown LRP rule {value!r}; use a Rule object or one of "
                     f"{', '.join(RULES)}")
