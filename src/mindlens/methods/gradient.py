"""Input-gradient methods: vanilla gradient saliency, Guided Backpropagation, DeconvNet.

All three cost one forward pass and one backward pass per target; top-k targets share the
forward pass. Gradients come from ``torch.autograd.grad`` with respect to the input only,
so no parameter gradient is computed or left behind.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..explanation import Cost, Explanation
from ..model import Classifier
from ..targets import Targets, probabilities
from .activations import OTHER_POLICIES, ModifiedActivations, check_no_script_submodules
from .base import Method, Needs, reduce_channels, register


@dataclass
class InputGradients:
    """Per-target input gradients ``[B, T, C, H, W]`` and what produced them."""

    grads: torch.Tensor
    logits: torch.Tensor
    classes: torch.Tensor
    scores: torch.Tensor
    cost: Cost


def input_gradients(clf: Classifier, x: torch.Tensor, targets: Targets,
                    mode: ModifiedActivations | None = None) -> InputGradients:
    """One forward (inside ``mode`` if given), one backward per target."""
    xg = x.detach().requires_grad_(True)
    with clf.patched(), torch.enable_grad():
        with mode if mode is not None else nullcontext():
            logits = clf(xg)
        classes = targets.resolve(logits.detach())
        scores = targets.scores(logits, classes)
        n_targets = classes.shape[1]
        grads = [
            torch.autograd.grad(scores[:, t].sum(), xg, retain_graph=t + 1 < n_targets)[0]
            for t in range(n_targets)
        ]
    return InputGradients(torch.stack(grads, dim=1), logits.detach(), classes,
                          scores.detach(), Cost(forward=1, backward=n_targets))


def gradient_explanation(method: Method, g: InputGradients, x: torch.Tensor,
                         **extras: object) -> Explanation:
    raw = g.grads * x.detach()[:, None] if method.params.get("times_input") else g.grads
    return Explanation(
        logits=g.logits.detach(),
        method=method.name, maps=reduce_channels(raw, method.params["reduction"]),
        targets=g.classes, scores=g.scores, probs=probabilities(g.logits, g.classes),
        signed=method.signed, params=dict(method.params, score="logit"),
        native_shape=tuple(x.shape[2:]), cost=g.cost, raw=raw, extras=dict(extras),
    )


@register
class Saliency(Method):
    """Vanilla gradient saliency (Simonyan, Vedaldi, Zisserman 2013, "Deep Inside
    Convolutional Networks: Visualising Image Classification Models and Saliency Maps").

    ``G = d logit_c / d x``; the map is ``max_channels |G|`` by default (``reduction``).
    ``times_input=True`` gives Gradient x Input.
    """

    name = "saliency"
    title = "Gradient saliency"
    needs = Needs(gradients=True)
    meaning = ("Bright pixels are those where a tiny change would move the class score "
               "most; it shows sensitivity, not necessarily evidence.")
    reference = "Simonyan, Vedaldi, Zisserman 2013, arXiv:1312.6034"
    defaults = {"reduction": "max_abs", "times_input": False}

    def run(self, clf: Classifier, x: torch.Tensor, targets: Targets) -> Explanation:
        return gradient_explanation(self, input_gradients(clf, x, targets), x)


class _ModifiedBackprop(Method):
    rule: str
    defaults = {"reduction": "max_abs", "other_activations": "gradient"}

    def validate(self) -> None:
        super().validate()
        if self.params["other_activations"] not in OTHER_POLICIES:
            raise InputError(f"other_activations must be one of {', '.join(OTHER_POLICIES)}")

    def run(self, clf: Classifier, x: torch.Tensor, targets: Targets) -> Explanation:
        check_no_script_submodules(clf.module, self.name)
        mode = ModifiedActivations(self.rule, self.params["other_activations"])
        g = input_gradients(clf, x, targets, mode)
        mode.warn_others(self.name)
        return gradient_explanation(self, g, x, activations=dict(mode.counts),
                                    other_activations=dict(mode.others))


@register
class GuidedBackprop(_ModifiedBackprop):
    """Guided Backpropagation (Springenberg, Dosovitskiy, Brox, Riedmiller 2015, "Striving
    for Simplicity: The All Convolutional Net").

    At every ReLU-type activation the backward signal is ``1[a > 0] * relu(R)``; all other
    layers use the ordinary gradient. Works on ``nn.ReLU`` (in-place too), ``nn.ReLU6`` and
    functional ``F.relu``/``torch.relu``/``Tensor.relu`` alike (see
    :mod:`mindlens.methods.activations`).
    """

    name = "guided_backprop"
    title = "Guided Backpropagation"
    rule = "guided"
    needs = Needs(gradients=True, hooks=True)
    meaning = ("Bright pixels are fine image details (edges, textures) that excite the "
               "network; sharp, but hardly specific to the class.")
    reference = "Springenberg et al. 2015, arXiv:1412.6806"


@register
class DeconvNet(_ModifiedBackprop):
    """DeconvNet visualisation (Zeiler & Fergus 2014, "Visualizing and Understanding
    Convolutional Networks"): at every ReLU the backward signal is ``relu(R)``, ignoring
    the forward activation."""

    name = "deconvnet"
    title = "DeconvNet"
    rule = "deconvnet"
    needs = Needs(gradients=True, hooks=True)
    meaning = ("Bright pixels are patterns the network's filters respond to; it shows "
               "what the filters see rather than what decided the class.")
    reference = "Zeiler & Fergus 2014, ECCV, arXiv:1311.2901"
