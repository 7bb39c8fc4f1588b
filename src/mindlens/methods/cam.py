"""Class activation maps: CAM, Grad-CAM and Guided Grad-CAM.

The Grad-CAM family follows one template (after pytorch-grad-cam): capture the feature
map ``A`` of a layer and the gradient ``g = d score / d A``, let the variant turn them into
a map at the layer's resolution, then upsample bilinearly to the input. The trunk up to
the layer runs without autograd, so a Grad-CAM costs about one forward pass plus a
backward pass through the head only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ModelError, NotApplicableError
from ..explanation import Cost, Explanation
from ..model import Classifier
from ..targets import Targets, probabilities
from .activations import ModifiedActivations, check_no_script_submodules
from .base import Method, Needs, reduce_channels, register, upsample
from .gradient import GuidedBackprop, input_gradients


class LayerCapture:
    """Forward hook that records one layer's output ``A`` and hands the model a copy.

    With ``head_only=True`` the forward runs under ``torch.no_grad()`` and autograd starts
    recording at the layer (``A`` becomes a leaf that requires grad), so the backward pass
    stops there. The hook returns a clone, so in-place operations after the layer cannot
    change the recorded ``A``.
    """

    def __init__(self, name: str, head_only: bool = True) -> None:
        self.name, self.head_only = name, head_only
        self.A: torch.Tensor | None = None
        self.calls = 0

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> torch.Tensor:
        self.calls += 1
        if self.calls > 1:
            raise ModelError(
                f"layer {self.name!r} runs more than once in one forward pass (a re-used "
                f"module), so its output is ambiguous; choose a layer that runs once"
            )
        if not isinstance(output, torch.Tensor) or output.dim() < 4 or output[0, 0].numel() < 2:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output)
            raise ModelError(
                f"layer {self.name!r} outputs {shape}, not a spatial feature map "
                f"[B, C, h, w] with h*w > 1; choose a convolutional layer before global "
                f"pooling (or layer='auto')"
            )
        if self.head_only:
            torch.set_grad_enabled(True)
            self.A = output.detach().requires_grad_(True)
        else:
            self.A = output
        return self.A.clone()

    def result(self) -> torch.Tensor:
        if self.A is None:
            raise ModelError(f"layer {self.name!r} did not run in the forward pass")
        return self.A


class _LayerMethod(Method):
    defaults = {"layer": "auto"}

    def resolve_layer(self, clf: Classifier, x: torch.Tensor) -> tuple[str, nn.Module]:
        return clf.layer(self.params["layer"], example=x[:1])

    def layer_name(self, name: str) -> dict[str, Any]:
        return dict(self.params, layer=name)

    def layer_activations(self, clf: Classifier, x: torch.Tensor
                          ) -> tuple[str, nn.Module, torch.Tensor, torch.Tensor]:
        """One clean forward without autograd: the layer's name and module, its
        activation ``[B, K, *s]`` and the logits."""
        name, layer = self.resolve_layer(clf, x)
        capture = LayerCapture(name, head_only=False)
        with clf.patched() as patch, torch.no_grad():
            patch.forward_hook(layer, capture)
            logits = clf(x)
        return name, layer, capture.result(), logits


class GradCAMBase(_LayerMethod):
    """Template for gradient-weighted CAMs; a variant overrides :meth:`layer_map`."""

    needs = Needs(gradients=True, layer=True, hooks=True)
    defaults = {"layer": "auto", "relu": True}

    def layer_map(self, A: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """``A``, ``grad``: ``[B, K, *s]`` -> map ``[B, *s]`` before ReLU."""
        raise NotImplementedError

    def layer_gradients(self, clf: Classifier, x: torch.Tensor, targets: Targets
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                   torch.Tensor, str]:
        """``A [B, K, *s]``, ``grads [B, T, K, *s]``, logits, classes, scores, layer name."""
        name, layer = self.resolve_layer(clf, x)
        capture = LayerCapture(name, head_only=True)
        with clf.patched() as patch, torch.no_grad():
            patch.forward_hook(layer, capture)
            logits = clf(x)
            A = capture.result()
            classes = targets.resolve(logits.detach())
            scores = targets.scores(logits, classes)
            n = classes.shape[1]
            grads = [torch.autograd.grad(scores[:, t].sum(), A, retain_graph=t + 1 < n,
                                         allow_unused=True)[0] for t in range(n)]
        if grads[0] is None:
            raise ModelError(f"the class scores do not depend on layer {name!r}")
        return (A.detach(), torch.stack(grads, dim=1), logits.detach(), classes,
                scores.detach(), name)

    def maps_from(self, A: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        maps = torch.stack([self.layer_map(A, grads[:, t]) for t in range(grads.shape[1])], 1)
        return maps.clamp_min(0) if self.params["relu"] else maps

    def run(self, clf: Classifier, x: torch.Tensor, targets: Targets) -> Explanation:
        A, grads, logits, classes, scores, name = self.layer_gradients(clf, x, targets)
        native = self.maps_from(A, grads)
        return Explanation(
            logits=logits.detach(),
            method=self.name, maps=upsample(native, tuple(x.shape[2:])), targets=classes,
            scores=scores, probs=probabilities(logits, classes),
            signed=not self.params["relu"], params=dict(self.layer_name(name), score="logit"),
            native_shape=tuple(A.shape[2:]), cost=Cost(forward=1, backward=classes.shape[1]),
        )


@register
class GradCAM(GradCAMBase):
    """Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks
    via Gradient-based Localization").

    Channel weights ``alpha_k = mean_ij dy^c/dA^k_ij``; map ``ReLU(sum_k alpha_k A^k)``
    (``relu=False`` keeps the sign), upsampled bilinearly to the input.
    """

    name = "gradcam"
    title = "Grad-CAM"
    meaning = ("Warm regions are where the network found evidence for the class, at the "
               "coarse resolution of its last feature map.")
    reference = "Selvaraju et al. 2017, ICCV, arXiv:1610.02391"

    def layer_map(self, A: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        alpha = grad.flatten(2).mean(dim=2)
        return torch.einsum("bk,bk...->b...", alpha, A)


@register
class CAM(_LayerMethod):
    """Class Activation Mapping (Zhou et al. 2016, "Learning Deep Features for
    Discriminative Localization").

    Needs a head of the form *feature map -> global average pooling -> linear* (a 1x1
    convolution counts as linear; 3-D feature maps of ``Conv3d`` models work the same
    way). ``M_c = sum_k w^c_k A^k`` without bias and, as in the paper, without ReLU
    (``relu=True`` adds one). One forward pass gives every class.
    """

    name = "cam"
    title = "CAM"
    needs = Needs(layer=True, hooks=True)
    meaning = ("Warm regions add to the class score and cool ones subtract from it; the map "
               "is an exact spatial split of the score (without its bias).")
    reference = "Zhou et al. 2016, CVPR, arXiv:1512.04150"
    defaults = {"layer": "auto", "relu": False}

    @property
    def signed(self) -> bool:
        return not self.params["relu"]

    def run(self, clf: Classifier, x: torch.Tensor, targets: Targets) -> Explanation:
        name, layer = self.resolve_layer(clf, x)
        capture = LayerCapture(name, head_only=False)
        linear: list[nn.Module] = []

        def track(module: nn.Module, _inputs: Any, _output: Any) -> None:
            if capture.A is not None:
                linear.append(module)

        with clf.patched() as patch, torch.no_grad():
            patch.forward_hook(layer, capture)
            for m in clf.module.modules():
                if isinstance(m, nn.Linear) or (isinstance(m, (nn.Conv2d, nn.Conv3d)) and
                                                set(m.kernel_size) == {1} and m.groups == 1):
                    patch.forward_hook(m, track)
            logits = clf(x)
        A = capture.result()
        weight, bias, A = self._head(clf, name, A, linear, logits)
        classes = targets.resolve(logits)
        if (classes < 0).any():
            raise NotApplicableError("CAM explains class logits; a callable target needs gradcam")
        w = weight[classes + clf.logit_offset]  # [B, T, K]
        native = torch.einsum("btk,bk...->bt...", w, A)
        if self.params["relu"]:
            native = native.clamp_min(0)
        return Explanation(
            logits=logits.detach(),
            method=self.name, maps=upsample(native, tuple(x.shape[2:])), targets=classes,
            scores=logits.gather(1, classes), probs=probabilities(logits, classes),
            signed=self.signed, params=dict(self.layer_name(name), score="logit"),
            native_shape=tuple(A.shape[2:]), cost=Cost(forward=1),
            extras={"bias": bias[classes + clf.logit_offset]},
        )

    def _head(self, clf: Classifier, name: str, A: torch.Tensor, linear: list[nn.Module],
              logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The head's weight ``[classes, K]`` and bias, after checking the head is GAP+linear,
        and the pooled features: ``A``, or ``relu(A)`` when the model applies a functional
        ReLU (``F.relu``) between the layer and the pooling, which no module hook sees."""
        hint = ("CAM needs a head of the form feature map -> global average pooling -> one "
                "linear layer; use method 'gradcam', which works on any head")
        if not linear:
            raise NotApplicableError(f"no linear layer runs after layer {name!r}. {hint}")
        last = linear[-1]
        weight = last.weight.detach().flatten(1)
        if weight.shape[1] != A.shape[1] or weight.shape[0] != logits.shape[1] + clf.logit_offset:
            raise NotApplicableError(
                f"the last linear layer maps {weight.shape[1]} features to {weight.shape[0]} "
                f"outputs, but layer {name!r} has {A.shape[1]} channels. {hint}"
            )
        bias = last.bias.detach() if last.bias is not None else torch.zeros(weight.shape[0])
        scale = float(logits.abs().max().clamp_min(1e-12))
        gaps = []
        for features in (A, A.clamp_min(0)):
            expected = (features.flatten(2).mean(dim=2) @ weight.T + bias)[:, clf.logit_offset:]
            gap = float((expected - logits).abs().max())
            if gap <= 1e-4 * scale:
                return weight, bias, features
            gaps.append(gap)
        raise NotApplicableError(
            f"the logits are not global-average-pooled {name!r} features times the last "
            f"linear layer (max difference {min(gaps):.3g}). {hint}"
        )


@register
class GuidedGradCAM(GradCAM):
    """Guided Grad-CAM (Selvaraju et al. 2017): Guided Backpropagation times the upsampled
    Grad-CAM map, per input channel.

    When no ReLU runs after the layer (a GAP + linear head), one forward and one backward
    pass per target give both factors: the head's gradient is the same with or without
    guided rules. Otherwise Grad-CAM and Guided Backprop run separately.
    """

    name = "guided_gradcam"
    title = "Guided Grad-CAM"
    needs = Needs(gradients=True, layer=True, hooks=True)
    meaning = ("Bright pixels are fine details inside the regions Grad-CAM found; sharp "
               "and class-specific, but it inherits Guided Backprop's blindness to weights.")
    reference = "Selvaraju et al. 2017, ICCV, arXiv:1610.02391"
    defaults = {"layer": "auto", "relu": True, "reduction": "max_abs",
                "other_activations": "gradient"}

    def validate(self) -> None:
        super().validate()
        GuidedBackprop(other_activations=self.params["other_activations"])

    def run(self, clf: Classifier, x: torch.Tensor, targets: Targets) -> Explanation:
        check_no_script_submodules(clf.module, self.name)
        name, layer = self.resolve_layer(clf, x)
        mode = ModifiedActivations("guided", self.params["other_activations"])
        capture = LayerCapture(name, head_only=False)
        seen_at_layer: list[int] = []

        def hook(module: nn.Module, inputs: Any, output: Any) -> torch.Tensor:
            seen_at_layer.append(mode.calls)
            return capture(module, inputs, output)

        xg = x.detach().requires_grad_(True)
        with clf.patched() as patch, torch.enable_grad():
            patch.forward_hook(layer, hook)
            with mode:
                logits = clf(xg)
            A = capture.result()
            classes = targets.resolve(logits.detach())
            scores = targets.scores(logits, classes)
            n = classes.shape[1]
            head_is_linear = seen_at_layer[0] == mode.calls
            if head_is_linear:
                grads_A, grads_x = [], []
                for t in range(n):
                    (gA,) = torch.autograd.grad(scores[:, t].sum(), A, retain_graph=True)
                    (gx,) = torch.autograd.grad(A, xg, grad_outputs=gA, retain_graph=t + 1 < n)
                    grads_A.append(gA)
                    grads_x.append(gx)
                grads = torch.stack(grads_A, 1)
                gbp = torch.stack(grads_x, 1)
                cost = Cost(forward=1, backward=n)
        mode.warn_others(self.name)
        if not head_is_linear:  # ReLUs in the head: the guided head gradient differs
            A, grads, logits, classes, scores, name = self.layer_gradients(clf, x, targets)
            g = input_gradients(clf, x, targets, ModifiedActivations(
                "guided", self.params["other_activations"]))
            gbp, cost = g.grads, Cost(forward=2, backward=2 * n)
        cam = upsample(self.maps_from(A.detach(), grads), tuple(x.shape[2:]))
        raw = gbp * cam[:, :, None]
        return Explanation(
            logits=logits.detach(),
            method=self.name, maps=reduce_channels(raw, self.params["reduction"]),
            targets=classes, scores=scores.detach(), probs=probabilities(logits.detach(),
                                                                          classes),
            signed=self.signed, params=dict(self.layer_name(name), score="logit"),
            native_shape=tuple(x.shape[2:]), cost=cost, raw=raw,
            extras={"gradcam": cam, "single_pass": head_is_linear},
        )
