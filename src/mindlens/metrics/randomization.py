"""Cascading model-parameter randomisation, the sanity check of Adebayo, Gilmer, Muelly,
Goodfellow, Hardt, Kim, "Sanity Checks for Saliency Maps", NeurIPS 2018.

Layers are re-initialised from the top (logits) downwards, one more at each step, and the
explanation of the same input and class is recomputed and compared with the original by
Spearman rank correlation (of ``|map|`` and of the signed map) and by SSIM of maps
min-max scaled to [0, 1]. A method whose maps depend on the learned weights decorrelates
quickly; one that does not (Guided Backprop in the paper) stays similar.

Randomisation happens on a deep copy of the model, so the user's model is never changed.
The default layers are the convolutional and linear modules in execution order; each is
re-drawn as independent Gaussian weights (and biases) with the mean and standard deviation
of the trained ones, from a generator seeded with ``seed`` (keeping the activation scale,
so deep stacks of random layers neither vanish nor overflow). Normalisation layers keep
their trained parameters.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ..errors import InputError
from ..model import Classifier
from ..patching import model_lock
from .explainers import ExplainFn
from .similarity import normalize01, spearman, ssim

DEFAULT_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class RandomizationCurves:
    """Per step (0 = the trained model) and image: ``layers[k]`` is the layer randomised
    last at step ``k`` (``"none"`` at step 0); similarities are ``[steps + 1, N]``."""

    layers: list[str]
    spearman_abs: torch.Tensor
    spearman_signed: torch.Tensor
    ssim: torch.Tensor
    maps: torch.Tensor = field(repr=False)  # [steps + 1, N, H, W]

    def mean(self) -> dict[str, list[float]]:
        """Image-averaged curves, for reports."""
        return {
            "layers": list(self.layers),
            "spearman_abs": self.spearman_abs.nanmean(dim=1).tolist(),
            "spearman_signed": self.spearman_signed.nanmean(dim=1).tolist(),
            "ssim": self.ssim.nanmean(dim=1).tolist(),
        }


def execution_order(clf: Classifier, x: torch.Tensor,
                    types: tuple[type[nn.Module], ...] = DEFAULT_TYPES) -> list[str]:
    """Names of the modules of ``types`` in the order a forward pass runs them."""
    names = {m: n for n, m in clf.module.named_modules()}
    seen: list[str] = []

    def record(module: nn.Module, *_: object) -> None:
        name = names[module]
        if name not in seen:
            seen.append(name)

    with clf.patched() as patch, torch.no_grad():
        for module in names:
            if isinstance(module, types):
                patch.forward_hook(module, record)
        clf(x[:1])
    return seen


def randomize_module(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw ``module``'s own parameters as Gaussians with their trained mean and std."""
    with torch.no_grad():
        for p in module.parameters(recurse=False):
            mean = p.detach().double().mean().item()
            std = p.detach().double().std().item() if p.numel() > 1 else 0.0
            std = std if std > 0 else 1.0 / max(1, p.numel()) ** 0.5
            new = torch.randn(p.shape, generator=generator, dtype=torch.float64) * std + mean
            p.copy_(new.to(device=p.device, dtype=p.dtype))


def cascading_randomization(explain: ExplainFn, clf: Classifier, x: torch.Tensor,
                            classes: torch.Tensor | None = None,
                            layers: list[str] | None = None, seed: int = 42,
                            reference: torch.Tensor | None = None, final_only: bool = False
                            ) -> RandomizationCurves:
    """Run the cascading randomisation on ``x`` ``[N, C, H, W]`` for ``classes`` (default:
    the trained model's prediction, kept fixed throughout).

    ``layers``: dotted module names, randomised in the reverse of the given order (the
    last, i.e. top, first); default: :func:`execution_order`. ``reference``: the trained
    model's maps ``[N, H, W]`` of ``classes`` when the caller has them (step 0 is then not
    explained again). ``final_only``: explain only the last step (every layer randomised,
    with the very weights the cascade reaches, drawn in the same order): the curves then
    hold steps 0 and the last, and ``layers`` names ``"none"`` and the last layer.
    """
    x = clf.check_tensor(x)
    if classes is None:
        classes = clf.predict(x).argmax(dim=1)
    order = execution_order(clf, x) if layers is None else list(layers)
    if not order:
        raise InputError("no layers to randomise: give layers= (dotted module names)")
    twin = replace_module_copy(clf)
    for name in order:
        try:
            twin.module.get_submodule(name)
        except AttributeError:
            raise InputError(f"the model has no layer named {name!r}") from None
    g = torch.Generator().manual_seed(seed)
    if reference is not None and tuple(reference.shape[:1]) != (len(x),):
        raise InputError(f"reference holds {len(reference)} map(s) for {len(x)} image(s)")
    maps = [reference.detach() if reference is not None else explain(twin, x, classes).detach()]
    for k, name in enumerate(reversed(order), start=1):
        randomize_module(twin.module.get_submodule(name), g)
        if not final_only or k == len(order):
            maps.append(explain(twin, x, classes).detach())
    stack = torch.stack([m.to(maps[-1].device) for m in maps]).double()
    ref = stack[0]
    sp_abs = torch.stack([spearman(ref.abs(), m.abs()) for m in stack])
    sp_sig = torch.stack([spearman(ref, m) for m in stack])
    ss = torch.stack([ssim(normalize01(ref.abs()), normalize01(m.abs())) for m in stack])
    names = ["none", order[0]] if final_only else ["none", *reversed(order)]
    return RandomizationCurves(names, sp_abs, sp_sig, ss, stack)


def replace_module_copy(clf: Classifier) -> Classifier:
    """A Classifier around a deep copy of ``clf.module`` (same input spec and labels)."""
    with model_lock(clf.module):  # never copy another thread's patched model
        return replace(clf, module=copy.deepcopy(clf.module))
