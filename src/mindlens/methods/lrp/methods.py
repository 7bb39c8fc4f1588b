"""The LRP family as mindlens methods: ``lrp``, ``sglrp`` and ``clrp``.

All three share one traced, canonized forward pass per call; each target then costs one
(or, for the scaled contrastive variants, two) backward passes with a different initial
relevance vector at the logits. Every LRP rule is linear in the incoming relevance, so
these vectors are all that differs between the methods.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ...errors import InputError, NotApplicableError
from ...explanation import Cost, Explanation
from ...model import Classifier
from ...targets import Targets, probabilities
from ..base import Method, Needs, reduce_channels, register
from . import composites
from .core import Graph, lrp_graph

Tensor = torch.Tensor
INITS = ("logit", "one")


def sglrp_init(logits: Tensor, classes: Tensor) -> tuple[Tensor, Tensor]:
    """SGLRP's initial relevance (Iwana et al. 2019, eq. 7): the gradient of the target's
    softmax probability with respect to every logit, ``g_t = y_t (1 - y_t)``,
    ``g_n = -y_t y_n``, in float64 from ``log_softmax``. Returns ``(target part, dual
    part)``, both ``>= 0``, with ``g = target - dual`` (``sum g = 0``)."""
    logp = torch.log_softmax(logits.detach().double(), dim=1)
    y = logp.exp()
    logp_t = logp.gather(1, classes[:, None])
    y_t = logp_t.exp()
    target = torch.zeros_like(y).scatter_(1, classes[:, None],
                                          torch.exp(logp_t + torch.log1p(-y_t)))
    dual = (y_t * y).scatter_(1, classes[:, None], 0.0)
    return target, dual


class _LRPFamily(Method):
    needs = Needs(gradients=True, hooks=True, rules=True)
    defaults = {"composite": composites.DEFAULT, "epsilon": 1e-6, "reduction": "sum",
                "gate_rule": "gate_constant", "norm_rule": "std_constant"}

    def validate(self) -> None:
        super().validate()
        eps = self.params["epsilon"]
        if not isinstance(eps, (int, float)) or eps <= 0:
            raise InputError(f"epsilon must be a positive number, got {eps!r}")
        self.composite()

    def composite(self) -> composites.Composite:
        """The composite with this call's ``gate_rule`` and ``norm_rule``."""
        comp = composites.get(self.params["composite"], float(self.params["epsilon"]))
        return replace(comp, gate_rule=self.params["gate_rule"],
                       norm_rule=self.params["norm_rule"])
        if self.params.get("init", "logit") not in INITS:
            raise InputError(f"init must be one of {', '.join(INITS)}")

    @property
    def signed(self) -> bool:
        return self.params["reduction"] == "sum" and not self.params.get("relu", False)

    def vectors(self, logits: Tensor, classes: Tensor, t: int) -> list[Tensor]:
        """Initial relevance vectors ``[B, classes]`` for target column ``t``."""
        raise NotImplementedError

    def combine(self, parts: list[Tensor]) -> Tensor:
        return parts[0]

    def run(self, clf: Classifier, x: torch.Tensor, targets: Targets) -> Explanation:
        if targets.score_fn is not None:
            raise InputError(f"{self.name} starts from class logits; give class indices "
                             f"(target=...) or top_k instead of a callable")
        comp = self.composite()
        with lrp_graph(clf, x, comp) as graph:
            logits = graph.logits.detach()
            classes = targets.resolve(logits)
            n_t = classes.shape[1]
            maps, backward = [], 0
            for t in range(n_t):
                vecs = self.vectors(logits, classes, t)
                parts = []
                for i, v in enumerate(vecs):
                    last = t + 1 == n_t and i + 1 == len(vecs)
                    parts.append(graph.relevance(v, retain=not last))
                    backward += 1
                maps.append(self.combine(parts))
            raw = torch.stack(maps, dim=1).detach()
        scores = logits.gather(1, classes)
        return Explanation(
            logits=logits.detach(),
            method=self.name, maps=reduce_channels(raw, self.params["reduction"]),
            targets=classes, scores=scores, probs=probabilities(logits, classes),
            signed=self.signed, params=dict(self.params, composite=comp.name, score="logit"),
            native_shape=tuple(x.shape[2:]), cost=Cost(forward=graph.forwards, backward=backward),
            raw=raw, extras=self.extras(graph, raw, scores),
        )

    def extras(self, graph: Graph, raw: Tensor, scores: Tensor) -> dict:
        return {
            "relevance_sum": raw.flatten(2).sum(-1),
            "rules": graph.plan.rules(),
            "merged_batchnorm": graph.plan.merges,
            "first_layer": graph.plan.first,
            "functional_ops": dict(graph.mode.counts),
        }


@register
class LRP(_LRPFamily):
    """Layer-wise Relevance Propagation (Bach et al. 2015, "On Pixel-Wise Explanations
    for Non-Linear Classifier Decisions by Layer-Wise Relevance Propagation"; composites
    after Kohlbrenner et al. 2020 and Zennit).

    ``init="logit"`` starts with ``R = z_t`` at the target logit (the map sums to about
    ``z_t``; ``extras["conservation"]`` is that ratio), ``"one"`` with ``R = 1`` (Zennit's
    default). Rules per layer come from ``composite`` (see
    :mod:`mindlens.methods.lrp.composites`); BatchNorm is merged and residual sums get the
    sum rule automatically (:mod:`mindlens.methods.lrp.canonizers`).
    """

    name = "lrp"
    title = "LRP"
    meaning = ("Red pixels carry evidence for the class and blue pixels evidence against "
               "it; the values share out the class score (the report gives the measured share).")
    reference = "Bach et al. 2015, PLoS ONE 10(7): e0130140"
    defaults = {**_LRPFamily.defaults, "init": "logit"}

    def vectors(self, logits, classes, t):
        idx = classes[:, t : t + 1]
        value = logits.gather(1, idx) if self.params["init"] == "logit" else torch.ones_like(
            idx, dtype=logits.dtype)
        return [torch.zeros_like(logits).scatter_(1, idx, value)]

    def extras(self, graph, raw, scores):
        out = super().extras(graph, raw, scores)
        total = out["relevance_sum"]
        out["conservation"] = total / scores if self.params["init"] == "logit" else total
        return out


class _Contrastive(_LRPFamily):
    defaults = {**_LRPFamily.defaults, "scaling": False, "relu": False}

    def check(self, clf: Classifier) -> None:
        super().check(clf)
        output = getattr(clf, "output", "softmax")
        if output != "softmax":
            raise NotApplicableError(
                f"{self.name} contrasts the target with the other classes of a softmax, but "
                f"this model's output is {output!r}: its labels do not compete (each has its "
                f"own sigmoid), so there is no contrast to take and the result would be LRP "
                f"scaled by a constant. Use lrp for this model.")

    def combine(self, parts):
        if len(parts) == 1:
            return parts[0]
        target, dual = parts
        st, sd = target.flatten(1).sum(1), dual.flatten(1).sum(1)
        lam = torch.where(sd.abs() > 1e-12, st / sd.where(sd.abs() > 1e-12, 1.0), 1.0)
        out = target - lam.view(-1, *([1] * (target.dim() - 1))) * dual
        return out.clamp(min=0) if self.params["relu"] else out


@register
class SGLRP(_Contrastive):
    """Softmax-Gradient LRP (Iwana, Kuroki, Uchida 2019, arXiv:1908.04351).

    The initial relevance is the gradient of the target's softmax probability with respect
    to the logits (:func:`sglrp_init`): the target gets ``y_t (1 - y_t)``, every other class
    ``-y_t y_n``, so evidence shared with probable competitors cancels. ``scaling=False``
    (default): one pass with that signed vector; ``True``: the reference code's two passes,
    ``R_target - lambda R_dual`` with ``lambda = sum R_target / sum R_dual``.
    ``relu=True`` keeps the positive part.
    """

    name = "sglrp"
    title = "Softmax-Gradient LRP"
    meaning = ("Red pixels are evidence for this class rather than the competing classes "
               "the model also considers; blue pixels favour the competitors.")
    reference = "Iwana, Kuroki, Uchida 2019, arXiv:1908.04351"

    def vectors(self, logits, classes, t):
        target, dual = sglrp_init(logits, classes[:, t])
        if self.params["scaling"]:
            return [target, dual]
        return [target - dual]


@register
class CLRP(_Contrastive):
    """Contrastive LRP (Gu, Yang, Tresp 2018, arXiv:1812.02100): the target's LRP minus
    that of a dual virtual class standing for all others, initialised with
    ``z_t / (K - 1)`` at every non-target logit (the reference code's "CLRP1").
    ``scaling=True`` uses ``lambda = sum R_target / sum R_dual`` (the reference's default);
    ``relu=True`` gives Gu et al.'s ``max(0, .)``; the default keeps the signed map."""

    name = "clrp"
    title = "Contrastive LRP"
    meaning = ("Red pixels are evidence for this class more than for all other classes "
               "together; blue pixels count more for the others.")
    reference = "Gu, Yang, Tresp 2018, ACCV, arXiv:1812.02100"
    defaults = {**_Contrastive.defaults, "scaling": True}

    def vectors(self, logits, classes, t):
        idx = classes[:, t : t + 1]
        z_t = logits.gather(1, idx)
        target = torch.zeros_like(logits).scatter_(1, idx, z_t)
        dual = (z_t / (logits.shape[1] - 1)).expand_as(logits).clone().scatter_(1, idx, 0.0)
        if self.params["scaling"]:
            return [target, dual]
        return [target - dual]
