"""Grad-CAM variants (spec methods-more.md section 17): Grad-CAM++, XGrad-CAM, LayerCAM,
HiResCAM and the gradient-free Eigen-CAM.

The gradient variants are the Grad-CAM template of :mod:`.cam` with another
:meth:`~.cam.GradCAMBase.layer_map`. Each returns the raw map at the layer's resolution,
upsampled bilinearly; what pytorch-grad-cam bakes in (a ReLU on every map, additive
constants in denominators) is a recorded parameter here, so its numbers can be
reproduced: ``relu=True`` and ``eps_additive`` as in the table of spec section 17.9.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from ..errors import InputError
from ..explanation import Cost, Explanation
from ..model import Classifier
from ..targets import Targets, probabilities
from .base import Needs, register, upsample
from .cam import GradCAMBase, _LayerMethod


def _check_eps(params: dict[str, Any]) -> None:
    eps = params.get("eps_additive")
    if not isinstance(eps, (int, float)) or eps < 0:
        raise InputError(f"eps_additive must be a number >= 0, got {eps!r}")


def _safe_divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` with 0 where ``den == 0``."""
    zero = den == 0
    return torch.where(zero, torch.zeros_like(num), num / torch.where(zero, 1, den))


@register
class GradCAMPlusPlus(GradCAMBase):
    """Grad-CAM++ (Chattopadhay, Sarkar, Howlader, Balasubramanian 2018, "Grad-CAM++:
    Improved Visual Explanations for Deep Convolutional Networks", WACV, arXiv:1710.11063).

    ``alpha^k_ij = g^2 / (2 g^2 + sum_ij(A^k) g^3)`` (eq. 19 with ``Y = exp(S)``; the
    positive factor ``exp(S)`` is dropped, as pytorch-grad-cam does), channel weight
    ``w_k = sum_ij alpha^k_ij ReLU(g_ij)`` (``relu_grad=False``: without the ReLU),
    map ``ReLU(sum_k w_k A^k)``. ``alpha = 0`` where ``g = 0`` or the denominator is 0;
    ``eps_additive`` adds a constant to every denominator (pytorch-grad-cam: 1e-6, which
    changes relative weights where gradients are small). A warning says when a
    denominator is negative where ``g > 0`` (signed layers: BatchNorm outputs, no ReLU).
    """

    name = "gradcam_pp"
    title = "Grad-CAM++"
    meaning = ("Warm regions are where the network found evidence for the class, each "
               "location weighted by how much it alone raises the score, so several "
               "instances of an object all show up.")
    reference = "Chattopadhay et al. 2018, WACV, arXiv:1710.11063"
    defaults = {"layer": "auto", "relu": True, "relu_grad": True, "eps_additive": 0.0}

    def validate(self) -> None:
        super().validate()
        _check_eps(self.params)

    def layer_map(self, A: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        g2 = grad.pow(2)
        total = A.flatten(2).sum(dim=2).reshape(*A.shape[:2], *([1] * (A.dim() - 2)))
        den = 2 * g2 + total * g2 * grad + self.params["eps_additive"]
        if bool(((den < 0) & (grad > 0)).any()):
            warnings.warn("gradcam_pp: negative denominators where the gradient is positive "
                          "(the layer has negative activations); its weights are unreliable "
                          "here, choose a layer after a ReLU", stacklevel=4)
        alpha = torch.where(grad == 0, torch.zeros_like(g2), _safe_divide(g2, den))
        pos = grad.clamp_min(0) if self.params["relu_grad"] else grad
        w = (alpha * pos).flatten(2).sum(dim=2)
        return torch.einsum("bk,bk...->b...", w, A)


@register
class XGradCAM(GradCAMBase):
    """XGrad-CAM (Fu, Hu, Dong, Ma, Zhao, Zheng 2020, "Axiom-based Grad-CAM: Towards
    Accurate Visualization and Explanation of CNNs", BMVC, arXiv:2008.02312).

    ``w_k = sum_ij (A^k_ij / sum_ij A^k) g^k_ij``, map ``sum_k w_k A^k``; ``w_k = 0`` for
    channels with ``sum A^k = 0`` (``eps_additive``: pytorch-grad-cam adds 1e-7 instead).
    Raw by default (``relu=False``): for a head that is positively homogeneous in ``A``
    (no biases; ReLU, pooling, linear) the map sums to the class score ("conservation").
    """

    name = "xgradcam"
    title = "XGrad-CAM"
    meaning = ("Warm regions add to the class score and cool ones subtract from it; the "
               "values of the coarse map add up to about the score.")
    reference = "Fu et al. 2020, BMVC, arXiv:2008.02312"
    defaults = {"layer": "auto", "relu": False, "eps_additive": 0.0}

    def validate(self) -> None:
        super().validate()
        _check_eps(self.params)

    def layer_map(self, A: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        total = A.flatten(2).sum(dim=2) + self.params["eps_additive"]
        w = _safe_divide((A * grad).flatten(2).sum(dim=2), total)
        return torch.einsum("bk,bk...->b...", w, A)


@register
class LayerCAM(GradCAMBase):
    """LayerCAM (Jiang, Zhang, Hou, Cheng, Wei 2021, "LayerCAM: Exploring Hierarchical
    Class Activation Maps for Localization", IEEE TIP 30).

    Element-wise weights instead of one weight per channel: map
    ``ReLU(sum_k ReLU(g^k) * A^k)`` (``relu_grad=False`` keeps negative gradients), so it
    also gives usable maps at shallow, high-resolution layers. One layer per call (the
    paper's multi-layer fusion is not implemented).
    """

    name = "layercam"
    title = "LayerCAM"
    meaning = ("Warm regions are locations whose activations push the class score up, "
               "weighted location by location, so finer layers give finer maps.")
    reference = "Jiang et al. 2021, IEEE Transactions on Image Processing 30"
    defaults = {"layer": "auto", "relu": True, "relu_grad": True}

    def layer_map(self, A: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        w = grad.clamp_min(0) if self.params["relu_grad"] else grad
        return (w * A).sum(dim=1)


@register
class HiResCAM(GradCAMBase):
    """HiResCAM (Draelos & Carin 2020, "Use HiResCAM instead of Grad-CAM for faithful
    explanations of convolutional neural networks", arXiv:2011.08891).

    Map ``sum_k g^k * A^k`` (gradient times activation, summed over channels). Raw by
    default (``relu=False``): for a head that is positively homogeneous in ``A`` the map
    sums to the class score; for "flatten + one linear layer" to the score minus its bias.
    """

    name = "hirescam"
    title = "HiResCAM"
    meaning = ("Warm regions add to the class score and cool ones subtract from it, "
               "location by location; the coarse map adds up to the score.")
    reference = "Draelos & Carin 2020, arXiv:2011.08891"
    defaults = {"layer": "auto", "relu": False}

    def layer_map(self, A: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return (grad * A).sum(dim=1)


SIGNS = ("mean_activation", "max_abs", "solver")


@register
class EigenCAM(_LayerMethod):
    """Eigen-CAM (Muhammad & Yeasin 2020, "Eigen-CAM: Class Activation Map using Principal
    Components", IJCNN, arXiv:2008.00299).

    The layer's activations as a ``(locations x channels)`` matrix ``O``, each channel
    centred over the locations (``center=True``, as pytorch-grad-cam does), projected on
    its first right singular vector: one forward pass, no gradient, and the same map for
    every class. Singular vectors have no sign; ``sign="mean_activation"`` (default) picks
    the one whose map correlates positively with the channel-sum map ``sum_k A^k``,
    ``"max_abs"`` the one whose largest magnitude is positive (Seg-Eigen-CAM),
    ``"solver"`` keeps the solver's. Raw by default (``relu=False``; pytorch-grad-cam:
    True). ``extras["explained_variance"]``: ``s_1^2 / sum s^2`` per image.
    """

    name = "eigencam"
    title = "Eigen-CAM"
    needs = Needs(layer=True, hooks=True)
    meaning = ("Warm regions are where the layer's dominant activation pattern is strong; "
               "the same map for every class, so it shows what the network looks at, not "
               "why it chose a class.")
    reference = "Muhammad & Yeasin 2020, IJCNN, arXiv:2008.00299"
    defaults = {"layer": "auto", "relu": False, "center": True, "sign": "mean_activation"}

    def validate(self) -> None:
        super().validate()
        if self.params["sign"] not in SIGNS:
            raise InputError(f"sign must be one of {', '.join(SIGNS)}, "
                             f"got {self.params['sign']!r}")

    @property
    def signed(self) -> bool:
        return not self.params["relu"]

    def projection(self, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``A [B, K, *s]`` -> maps ``[B, *s]`` and explained-variance ratios ``[B]``."""
        acts = A.flatten(2).transpose(1, 2)  # [B, locations, K]
        if self.params["center"]:
            acts = acts - acts.mean(dim=1, keepdim=True)
        acts = torch.nan_to_num(acts)
        _, s, vh = torch.linalg.svd(acts, full_matrices=False)
        p = torch.einsum("blk,bk->bl", acts, vh[:, 0])
        sign = self.params["sign"]
        if sign == "mean_activation":
            ref = A.flatten(2).sum(dim=1)
            corr = ((p - p.mean(1, keepdim=True)) * (ref - ref.mean(1, keepdim=True))).sum(1)
            p = torch.where(corr[:, None] < 0, -p, p)
        elif sign == "max_abs":
            p = torch.where((p.amin(1).abs() > p.amax(1).abs())[:, None], -p, p)
        energy = s.pow(2)
        ratio = _safe_divide(energy[:, 0], energy.sum(1))
        return p.reshape(A.shape[0], *A.shape[2:]), ratio

    def run(self, clf: Classifier, x: torch.Tensor, targets: Targets) -> Explanation:
        name, _, A, logits = self.layer_activations(clf, x)
        classes = targets.resolve(logits)
        native, ratio = self.projection(A)
        if self.params["relu"]:
            native = native.clamp_min(0)
        maps = native[:, None].expand(-1, classes.shape[1], *native.shape[1:])
        return Explanation(
            logits=logits.detach(),
            method=self.name, maps=upsample(maps.contiguous(), tuple(x.shape[2:])),
            targets=classes, scores=targets.scores(logits, classes),
            probs=probabilities(logits, classes), signed=self.signed,
            params=dict(self.layer_name(name), score="logit"),
            native_shape=tuple(A.shape[2:]), cost=Cost(forward=1),
            extras={"class_specific": False, "explained_variance": ratio},
        )
