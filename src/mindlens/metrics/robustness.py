"""Robustness of explanations to small input noise: max- and average-sensitivity (Yeh,
Hsieh, Suggala, Inouye, Ravikumar, "On the (In)fidelity and Sensitivity of Explanations",
NeurIPS 2019).

``SENS_max = max_{δ} ||Φ(x + δ) - Φ(x)|| / ||Φ(x)||`` and ``SENS_avg`` the mean, over
``n_samples`` draws of ``δ ~ U[-r, r]`` per input element (an L∞ ball of radius ``r`` in
model space), Frobenius norms of the 2-D maps, explained for the class predicted on the
clean input. ``relative=False`` drops the division by ``||Φ(x)||``; with it, a flat zero map
``Φ(x) = 0`` gives NaN (undefined), never a division by zero. All noisy copies of all images
go to the method in one call (methods bound their own memory by chunking), the norms are
taken in one vectorised step, and a caller that already has the clean maps passes them as
``base`` (as Quantus takes ``a_batch``), which saves their explanation and the clean forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from ..methods.layout import Layout
from ..model import Classifier
from .explainers import ExplainFn
from .faithfulness import Seed, generators


@dataclass
class Sensitivity:
    """``max`` and ``avg`` ``[N]``; ``samples`` ``[N, n_samples]`` (NaN where skipped)."""

    max: torch.Tensor
    avg: torch.Tensor
    samples: torch.Tensor
    radius: float


def uniform_noise(shape: torch.Size | tuple[int, ...], radius: float,
                  generator: torch.Generator, dtype: torch.dtype = torch.float64
                  ) -> torch.Tensor:
    """``U[-radius, radius]`` noise drawn on the CPU from ``generator``."""
    return (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * radius


def default_radius(clf: Classifier, x: torch.Tensor) -> float:
    """2 % of the widest model-space pixel range of ``clf`` (the spec's default)."""
    lo, hi = clf.spec.bounds(x[:1])
    return 0.02 * float((hi - lo).abs().max())


def sensitivity(explain: ExplainFn, clf: Classifier, x: torch.Tensor,
                classes: torch.Tensor | None = None, radius: float | None = None,
                n_samples: int = 50, seed: Seed = 0, relative: bool = True,
                skip_changed: bool = False, base: torch.Tensor | None = None
                ) -> Sensitivity:
    """Monte-Carlo max- and average-sensitivity of ``explain`` at ``x`` ``[N, C, H, W]``.

    ``classes``: the explained class per image (default: the clean prediction, kept for
    every noisy copy). ``skip_changed``: a sample whose noisy prediction differs from the
    clean one counts as NaN (Quantus' ``return_nan_when_prediction_changes``). ``seed``:
    one int (one generator for the batch, as Quantus draws) or one seed per image.
    ``base``: the clean maps ``[N, H, W]`` of ``classes`` when the caller has them already
    (they must be ``explain(clf, x, classes)``); default: explained here.
    """
    if n_samples < 1:
        raise InputError(f"n_samples must be >= 1, got {n_samples}")
    x = clf.check_tensor(x)
    predicted = None
    if classes is None or skip_changed:  # the clean forward only where it is needed
        with torch.no_grad():
            predicted = clf.predict(x).argmax(dim=1)
    if classes is None:
        classes = predicted
    assert classes is not None
    r = default_radius(clf, x) if radius is None else float(radius)
    if r <= 0:
        raise InputError(f"radius must be > 0, got {r}")
    gens = generators(seed, len(x))
    if base is None:
        base = explain(clf, x, classes)
    elif tuple(base.shape[:1]) != (len(x),):
        raise InputError(f"base holds {len(base)} map(s) for {len(x)} image(s): give the "
                         f"clean map of every image, or leave base out")
    base = base.detach().flatten(1).double()
    denom = base.norm(dim=1) if relative else torch.ones(len(base), dtype=torch.float64)
    noise = []
    for _ in range(n_samples):  # drawn sample by sample, as Quantus draws them
        if isinstance(seed, int):
            noise.append(uniform_noise(x.shape, r, gens[0], x.dtype))
        else:
            noise.append(torch.stack([uniform_noise(x.shape[1:], r, g, x.dtype)
                                      for g in gens]))
    # every noisy copy in one call (the method chunks it): [n_samples * N, ...], in the
    # layout many-copies batches run fastest in (channels-last on CPU: the same maps up to
    # rounding, see mindlens.methods.layout)
    xn = (x[None] + torch.stack(noise).to(x.device)).flatten(0, 1)
    repeated = classes.repeat(n_samples)
    maps = Layout(xn).call(lambda batch: explain(clf, batch, repeated), xn)
    maps = maps.flatten(1).double()
    diff = (maps.view(n_samples, len(x), -1) - base[None]).norm(dim=2)  # [S, N]
    value = (diff / denom[None]).masked_fill(denom[None] == 0, float("nan"))
    if skip_changed:
        with torch.no_grad():
            changed = clf.predict(xn).argmax(dim=1).view(n_samples, len(x)) != predicted
        value = value.masked_fill(changed, float("nan"))
    samples = value.T.cpu().contiguous()
    return Sensitivity(samples.nan_to_num(float("-inf")).max(dim=1).values
                       .masked_fill(samples.isnan().all(dim=1), float("nan")),
                       samples.nanmean(dim=1), samples, r)


def max_sensitivity(explain: ExplainFn, clf: Classifier, x: torch.Tensor,
                    **kwargs: object) -> torch.Tensor:
    """Max-sensitivity per image ``[N]``; see :func:`sensitivity`."""
    return sensitivity(explain, clf, x, **kwargs).max  # type: ignore[arg-type]


def avg_sensitivity(explain: ExplainFn, clf: Classifier, x: torch.Tensor,
                    **kwargs: object) -> torch.Tensor:
    """Average-sensitivity per image ``[N]``; see :func:`sensitivity`."""
    return sensitivity(explain, clf, x, **kwargs).avg  # type: ignore[arg-type]
