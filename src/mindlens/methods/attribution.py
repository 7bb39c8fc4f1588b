"""Path and product attributions: Input x Gradient and Integrated Gradients.

Both are input-space methods with a signed, additive attribution per input value
(channel reduction ``"sum"`` by default): red is evidence for the class, blue against.
Quadrature rules, baselines and the convergence delta follow spec methods-more.md
§14-§15; Captum's conventions can be reproduced exactly for comparisons
(``rule="captum_trapezoid"``, ``node_dtype="captum"``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..explanation import Cost, Explanation
from ..model import Classifier
from ..targets import Targets, probabilities
from .base import Method, Needs, reduce_channels, register
from .gradient import input_gradients
from .layout import Layout
from .perturbation import BASELINE_NAMES, baseline_param, resolve_baseline

RULES = ("gauss_legendre", "left", "right", "middle", "trapezoid", "captum_trapezoid")
NODE_DTYPES = ("exact", "captum")
IG_BASELINES = (*BASELINE_NAMES, "black", "white")


@register
class InputXGradient(Method):
    """Input x Gradient (Shrikumar, Greenside, Shcherbina, Kundaje 2016, "Not Just a Black
    Box: Learning Important Features Through Propagating Activation Differences",
    arXiv:1605.01713; Ancona et al. 2018, arXiv:1711.06104, for its equivalence with
    epsilon-LRP on ReLU networks).

    ``A = x * d S_c / d x`` element-wise in model space (for mean/std inputs that is
    ``(pixel - mean colour) * gradient`` in pixel space); one forward and one backward pass.
    """

    name = "input_x_gradient"
    title = "Input x Gradient"
    needs = Needs(gradients=True)
    meaning = ("Red pixels push the class score up, blue ones down: each input value times "
               "how strongly the score reacts to it.")
    reference = "Shrikumar et al. 2016, arXiv:1605.01713"
    defaults = {"reduction": "sum"}

    def run(self, clf: Classifier, x: torch.Tensor, targets: Targets) -> Explanation:
        g = input_gradients(clf, x, targets)
        raw = g.grads * x.detach()[:, None]
        return Explanation(
            logits=g.logits.detach(),
            method=self.name, maps=reduce_channels(raw, self.params["reduction"]),
            targets=g.classes, scores=g.scores, probs=probabilities(g.logits, g.classes),
            signed=self.signed, params=dict(self.params, score="logit", wrt="model_input"),
            native_shape=tuple(x.shape[2:]), cost=g.cost, raw=raw,
        )


def quadrature(rule: str, n: int, node_dtype: str = "exact") -> tuple[list[float], list[float]]:
    """Nodes ``alpha_k`` in [0, 1] and weights ``w_k`` of an ``n``-point rule for
    ``integral_0^1 f(alpha) d alpha`` (spec §15.3).

    ``"trapezoid"`` is the correct composite rule (weights sum to 1);
    ``"captum_trapezoid"`` is Captum's ``riemann_trapezoid`` (weights ``1/n``, ends halved,
    sum ``(n-1)/n``). ``node_dtype="captum"`` rounds as Captum does: Riemann nodes from a
    float32 ``torch.linspace``, all weights rounded to float32.
    """
    if rule not in RULES:
        raise InputError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    if node_dtype not in NODE_DTYPES:
        raise InputError(f"node_dtype must be one of {', '.join(NODE_DTYPES)}, got "
                         f"{node_dtype!r}")
    if not isinstance(n, int) or isinstance(n, bool) or n < (1 if rule == "gauss_legendre"
                                                                else 2):
        raise InputError(f"n_steps must be an integer >= {1 if rule == 'gauss_legendre' else 2}"
                         f" for rule={rule!r}, got {n!r}")
    captum = node_dtype == "captum"
    if rule == "gauss_legendre":
        t, w = np.polynomial.legendre.leggauss(n)
        nodes, weights = list(0.5 * (1 + t)), list(0.5 * w)
    else:
        ends = {"left": (0.0, 1 - 1 / n), "right": (1 / n, 1.0),
                "middle": (1 / (2 * n), 1 - 1 / (2 * n)), "trapezoid": (0.0, 1.0),
                "captum_trapezoid": (0.0, 1.0)}[rule]
        if captum:
            nodes = torch.linspace(*ends, n, dtype=torch.float32).tolist()
        else:
            first, div = {"left": (0.0, n), "right": (1.0, n), "middle": (0.5, n)}.get(
                rule, (0.0, n - 1))
            nodes = [(k + first) / div for k in range(n)]
        step = 1 / (n - 1) if rule == "trapezoid" else 1 / n
        weights = [step] * n
        if rule in ("trapezoid", "captum_trapezoid"):
            weights[0] /= 2
            weights[-1] /= 2
    if captum:
        weights = torch.tensor(weights, dtype=torch.float64).float().tolist()
    return [float(a) for a in nodes], [float(w) for w in weights]


def _check_positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        extra = " or None" if allow_none else ""
        raise InputError(f"{name} must be a positive integer{extra}, got {value!r}")


def ig_baseline(baseline: Any, clf: Classifier, x: torch.Tensor,
                blur_sigma: float) -> torch.Tensor:
    """The IG baseline as a model-space tensor shaped like ``x`` (spec §15.2)."""
    if isinstance(baseline, str) and baseline in ("black", "white"):
        baseline = 0.0 if baseline == "black" else 1.0
    spatial = x.dim() - 2
    return resolve_baseline(baseline, clf, x, [blur_sigma] * spatial).detach()


@register
class IntegratedGradients(Method):
    """Integrated Gradients (Sundararajan, Taly, Yan 2017, "Axiomatic Attribution for Deep
    Networks", ICML, arXiv:1703.01365).

    ``IG = (x - b) * integral_0^1 grad S(b + alpha (x - b)) d alpha``, approximated with an
    ``n_steps``-point rule (``rule``: ``gauss_legendre`` as Captum's default, ``left``,
    ``right``, ``middle``, ``trapezoid``, ``captum_trapezoid``). The path points run
    ``internal_batch_size`` at a time. Completeness ``sum IG = S(x) - S(b)`` holds up to the
    quadrature error, reported per image and target as ``extras["delta"]`` (and relative
    to ``S(x) - S(b)`` as ``extras["delta_rel"]``; a warning above ``delta_tolerance``).

    ``baseline``: ``"zero"`` (model space: the mean colour), ``"black"``, ``"white"``,
    ``"mean"`` (each image's mean colour), ``"blur"`` (Gaussian of ``blur_sigma`` pixels),
    a pixel value in [0, 1], a model-space tensor or a callable ``x -> b``.
    ``channels_last`` (CPU only): path points in channels-last batches, faster; False runs
    the kernels of ordinary batches (see :mod:`mindlens.methods.layout`).
    """

    name = "integrated_gradients"
    title = "Integrated Gradients"
    needs = Needs(gradients=True)
    meaning = ("Red pixels added to the class score on the way from a neutral baseline image "
               "to this one, blue ones took away from it; the values add up to the score "
               "difference.")
    reference = "Sundararajan, Taly, Yan 2017, arXiv:1703.01365"
    defaults = {"reduction": "sum", "baseline": "zero", "n_steps": 50,
                "rule": "gauss_legendre", "internal_batch_size": 64,
                "multiply_by_inputs": True, "node_dtype": "exact", "blur_sigma": 5.0,
                "delta_tolerance": 0.05, "channels_last": True}

    def validate(self) -> None:
        super().validate()
        p = self.params
        quadrature(p["rule"], p["n_steps"], p["node_dtype"])  # raises with the fix
        _check_positive_int("internal_batch_size", p["internal_batch_size"], allow_none=True)
        b = p["baseline"]
        ok = (b in IG_BASELINES if isinstance(b, str) else
              isinstance(b, (int, float, torch.Tensor)) or callable(b))
        if not ok or isinstance(b, bool):
            raise InputError(f"baseline must be one of {', '.join(IG_BASELINES)}, a pixel value "
                             f"in [0, 1], a model-space tensor or a callable x -> b; got {b!r}")
        if not isinstance(p["blur_sigma"], (int, float)) or p["blur_sigma"] <= 0:
            raise InputError(f"blur_sigma must be a positive number of pixels, got "
                             f"{p['blur_sigma']!r}")

    def run(self, clf: Classifier, x: torch.Tensor, targets: Targets) -> Explanation:
        p = self.params
        x = x.detach()
        base = ig_baseline(p["baseline"], clf, x, float(p["blur_sigma"]))
        nodes, weights = quadrature(p["rule"], p["n_steps"], p["node_dtype"])
        with clf.patched():
            with torch.no_grad():  # input and baseline in one pass, in the path's layout
                both = Layout(x, bool(p["channels_last"])).call(clf, torch.cat([x, base]))
                logits, logits_b = both[: x.shape[0]], both[x.shape[0] :]
                classes = targets.resolve(logits)
                s_x = targets.scores(logits, classes)
                s_b = targets.scores(logits_b, classes)
            grads = path_gradients(clf, x, base, classes, targets, nodes, weights,
                                   p["internal_batch_size"], bool(p["channels_last"]))
        diff = x - base
        raw = grads * diff[:, None] if p["multiply_by_inputs"] else grads
        n_t = classes.shape[1]
        extras: dict[str, Any] = {}
        if p["multiply_by_inputs"]:
            delta = raw.flatten(2).sum(2) - (s_x - s_b)
            rel = delta.abs() / (s_x - s_b).abs().clamp_min(1e-12)
            extras = {"delta": delta, "delta_rel": rel, "baseline_scores": s_b}
            worst = float(rel.max())
            if worst > p["delta_tolerance"]:
                warnings.warn(
                    f"integrated_gradients: the attributions miss S(x) - S(baseline) by "
                    f"{worst:.1%} (delta_tolerance {p['delta_tolerance']:.0%}); use more "
                    f"n_steps or rule='gauss_legendre'", stacklevel=2)
        steps = n_t * len(nodes)
        return Explanation(
            logits=logits.detach(),
            method=self.name, maps=reduce_channels(raw, p["reduction"]), targets=classes,
            scores=s_x, probs=probabilities(logits, classes), signed=self.signed,
            params=dict(p, baseline=baseline_param(p["baseline"]), score="logit"),
            native_shape=tuple(x.shape[2:]), cost=Cost(forward=2 + steps, backward=steps),
            raw=raw, extras=extras,
        )


def path_gradients(clf: Classifier, x: torch.Tensor, base: torch.Tensor,
                   classes: torch.Tensor, targets: Targets, nodes: list[float],
                   weights: list[float], chunk: int | None, channels_last: bool = True
                   ) -> torch.Tensor:
    """``sum_k w_k grad S_t(b + alpha_k (x - b))`` for every target: ``[B, T, *x.shape[1:]]``.

    Rows ``(node k, image i)`` are laid out node-major as in Captum and run ``chunk`` at a
    time (``None``: all at once), channels-last on a CPU; one backward per chunk and
    target.
    """
    b, n_t, n = x.shape[0], classes.shape[1], len(nodes)
    rows = n * b
    chunk = rows if chunk is None else chunk
    alpha = torch.tensor(nodes, dtype=torch.float64).to(device=x.device, dtype=x.dtype)
    w = torch.tensor(weights, dtype=torch.float64).to(device=x.device, dtype=x.dtype)
    shape = (-1,) + (1,) * (x.dim() - 1)
    out = torch.zeros((b, n_t, *x.shape[1:]), dtype=x.dtype, device=x.device)
    layout = Layout(x, channels_last)
    with torch.enable_grad():
        for t in range(n_t):
            for start in range(0, rows, chunk):
                r = torch.arange(start, min(start + chunk, rows), device=x.device)
                k, i = r // b, r % b
                cls = classes[i, t : t + 1]

                def grad(pts: torch.Tensor) -> torch.Tensor:
                    pts = pts.requires_grad_(True)
                    score = targets.scores(clf(pts), cls)  # noqa: B023 (called at once)
                    return torch.autograd.grad(score.sum(), pts)[0]

                g = layout.call(grad, base[i] + alpha[k].view(shape) * (x[i] - base[i]))
                out[:, t].index_add_(0, i, g * w[k].view(shape))
    return out

