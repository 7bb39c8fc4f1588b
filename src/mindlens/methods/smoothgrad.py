"""SmoothGrad, SmoothGrad-Squared and VarGrad: a noise wrapper over any input-space method
(spec methods-more.md §16).

The base method runs on ``n`` noisy copies ``x + eps_j`` of each image, the targets
resolved once on the clean image; the input-shaped attributions (``Explanation.raw``) are
averaged (``smoothgrad``), their squares averaged (``smoothgrad_sq``) or their variance
taken (``vargrad``), with float64 running mean and M2 (Chan/Welford), then reduced over
channels.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import InputError
from ..explanation import Cost, Explanation
from ..model import Classifier
from ..targets import Targets, probabilities
from . import base as registry
from . import chunks
from .base import REDUCTIONS, Method, Needs, reduce_channels, register
from .layout import Layout

KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")
RANGES = ("image", "box", "absolute")
STREAMS = ("mindlens", "captum")


@register
class SmoothGrad(Method):
    """SmoothGrad (Smilkov, Thorat, Kim, Viegas, Wattenberg 2017, "SmoothGrad: removing
    noise by adding noise", arXiv:1706.03825); ``kind="smoothgrad_sq"`` is SmoothGrad-Squared
    (Hooker et al. 2019, arXiv:1806.10758), ``kind="vargrad"`` VarGrad (Adebayo et al. 2018,
    arXiv:1810.03307).

    ``base``: the wrapped input-space method (``"saliency"``, ``"input_x_gradient"``,
    ``"integrated_gradients"``, ``"guided_backprop"``, ...) with ``base_params``. Noise
    ``sigma = noise_level * range``: ``noise_range="image"`` (each image's max - min, as
    Smilkov et al.), ``"box"`` (per channel, the width of the valid pixel box in model
    space) or ``"absolute"`` (``sigma`` itself, Captum's ``stdevs``).

    Noise stream ``"mindlens"``: one CPU generator per image seeded with ``seed + i`` (``i``
    the image's index in the batch given to ``explain``, also when it runs in chunks), one
    draw per noisy copy, so the result does not depend on ``batch_size``, ``max_batch``, on
    the other images or on the device. ``"captum"`` draws as Captum's ``NoiseTunnel`` does
    (the global RNG on the input's device, one draw per chunk of ``batch_size`` copies), for exact
    comparisons after ``torch.manual_seed``.
    """

    name = "smoothgrad"
    title = "SmoothGrad"
    needs = Needs(gradients=True)
    meaning = ("The base method's map averaged over many slightly noisy copies of the image: "
               "what stays bright is robust to small pixel changes.")
    reference = "Smilkov et al. 2017, arXiv:1706.03825"
    defaults: dict[str, Any] = {
        "base": "saliency", "base_params": {}, "kind": "smoothgrad", "n": 50,
        "noise_level": 0.15, "noise_range": "image", "sigma": None, "seed": 0,
        "batch_size": 16, "clip_to_box": False, "include_clean": False, "ddof": 0,
        "noise_stream": "mindlens", "reduction": None, "channels_last": True,
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.base = registry.get(self.params["base"])(**dict(self.params["base_params"]))
        self.needs = self.base.needs  # type: ignore[misc]  # what the wrapped method needs

    def validate(self) -> None:
        p = self.params
        if not isinstance(p["base"], str) or p["base"] == self.name:
            raise InputError(f"base must be the name of an input-space method other than "
                             f"smoothgrad, got {p['base']!r}")
        registry.get(p["base"])  # unknown name: InputError listing the methods
        if not isinstance(p["base_params"], dict):
            raise InputError(f"base_params must be a dict, got {p['base_params']!r}")
        for key, options in (("kind", KINDS), ("noise_range", RANGES),
                             ("noise_stream", STREAMS)):
            if p[key] not in options:
                raise InputError(f"{key} must be one of {', '.join(options)}, got {p[key]!r}")
        if p["reduction"] is not None and p["reduction"] not in REDUCTIONS:
            raise InputError(f"reduction must be None (the base method's) or one of "
                             f"{', '.join(REDUCTIONS)}, got {p['reduction']!r}")
        for key in ("n", "batch_size"):
            if not isinstance(p[key], int) or isinstance(p[key], bool) or p[key] < 1:
                raise InputError(f"{key} must be a positive integer, got {p[key]!r}")
        if p["noise_range"] == "absolute":
            if not isinstance(p["sigma"], (int, float)) or p["sigma"] < 0:
                raise InputError("noise_range='absolute' needs sigma >= 0 (the standard "
                                 f"deviation in model-space units), got {p['sigma']!r}")
        elif not isinstance(p["noise_level"], (int, float)) or p["noise_level"] < 0:
            raise InputError(f"noise_level must be a fraction >= 0 of the input range, "
                             f"got {p['noise_level']!r}")
        if p["ddof"] not in (0, 1) or p["ddof"] >= p["n"]:
            raise InputError(f"ddof must be 0 or 1 (and below n), got {p['ddof']!r}")
        if p["noise_stream"] == "captum" and (p["include_clean"] or p["clip_to_box"]):
            raise InputError("noise_stream='captum' reproduces Captum's NoiseTunnel, which has "
                             "neither include_clean nor clip_to_box; turn those off")

    def check(self, clf: Classifier) -> None:
        self.base.check(clf)

    def sigmas(self, clf: Classifier, x: torch.Tensor) -> torch.Tensor:
        """The noise standard deviation broadcastable to ``x`` (``[B or 1, C or 1, 1...]``)."""
        p = self.params
        ones = (1,) * (x.dim() - 2)
        if p["noise_range"] == "absolute":
            return torch.full((1, 1, *ones), float(p["sigma"]), dtype=x.dtype, device=x.device)
        if p["noise_range"] == "image":
            flat = x.flatten(1)
            rng = flat.amax(1) - flat.amin(1)
            return (p["noise_level"] * rng).view(-1, 1, *ones)
        low, high = clf.spec.bounds(x[:1])
        width = (high - low).flatten(2)[..., 0]
        return (p["noise_level"] * width).view(1, -1, *ones)

    def run(self, clf: Classifier, x: torch.Tensor, targets: Targets) -> Explanation:
        p = self.params
        x = x.detach()
        b = x.shape[0]
        layout = Layout(x, bool(p["channels_last"]))
        with clf.patched(), torch.no_grad():
            logits = layout.call(clf, x)
        classes = targets.resolve(logits)
        inner = Targets(targets.target) if targets.score_fn is not None else None
        sigma = self.sigmas(clf, x).expand(b, *([-1] * (x.dim() - 1)))
        n, step = p["n"], p["batch_size"]
        noise = _noise_stream(p, x, sigma)
        mean = m2 = None
        done = 0
        cost = Cost(forward=1)
        first: Explanation | None = None
        for start in range(0, n, step):
            k = min(step, n - start)
            noisy = x.repeat_interleave(k, dim=0) + noise(start, k)
            if p["clip_to_box"]:
                low, high = clf.spec.bounds(noisy)
                noisy = torch.maximum(torch.minimum(noisy, high), low)
            if p["include_clean"] and start + k == n:
                noisy.view(b, k, *x.shape[1:])[:, -1] = x
            rows = Targets(classes.repeat_interleave(k, dim=0)) if inner is None else inner
            e = layout.call(lambda batch: self.base.explain(clf, batch, rows),  # noqa: B023
                            noisy)
            if e.raw is None:
                raise InputError(f"smoothgrad needs an input-space base method (one whose "
                                 f"attributions have the input's shape); {self.base.name} "
                                 f"gives only a coarse map. Use saliency, input_x_gradient, "
                                 f"integrated_gradients, guided_backprop or lrp.")
            first = first or e
            cost.forward += k * e.cost.forward  # passes per image: k copies of each
            cost.backward += k * e.cost.backward
            a = e.raw.double().reshape(b, k, *e.raw.shape[1:])
            c_mean = a.mean(1)
            c_m2 = (a - c_mean[:, None]).pow(2).sum(1)
            if mean is None:
                mean, m2 = c_mean, c_m2
            else:  # Chan et al.'s pairwise update of the running mean and M2
                total = done + k
                delta = c_mean - mean
                mean = mean + delta * (k / total)
                m2 = m2 + c_m2 + delta.pow(2) * (done * k / total)
            done += k
        assert mean is not None and m2 is not None and first is not None
        var = m2 / (n - p["ddof"])
        out = {"smoothgrad": mean, "smoothgrad_sq": m2 / n + mean.pow(2), "vargrad": var}
        raw = out[p["kind"]].to(x.dtype)
        reduction = p["reduction"] or self.base.params.get("reduction") or "sum"
        signed = p["kind"] == "smoothgrad" and reduction == "sum"
        params = dict(p, reduction=reduction, score=first.params.get("score", "logit"),
                      sigma_used=sigma.flatten(2)[..., 0].tolist())  # [B, C]
        return Explanation(
            logits=logits.detach(),
            method=self.name, maps=reduce_channels(raw, reduction), targets=classes,
            scores=targets.scores(logits, classes), probs=probabilities(logits, classes),
            signed=signed, params=params, native_shape=tuple(x.shape[2:]), cost=cost,
            raw=raw, extras={"base": self.base.name},
        )


def _noise_stream(p: dict[str, Any], x: torch.Tensor, sigma: torch.Tensor):
    """``noise(start, k)``: the noise of copies ``start .. start+k-1`` of every image, rows
    laid out image-major (``repeat_interleave``)."""
    b = x.shape[0]
    if p["noise_stream"] == "captum":
        if sigma.unique().numel() != 1:
            raise InputError("noise_stream='captum' draws one standard deviation for the "
                             "whole batch, as Captum's stdevs: use noise_range='absolute' or "
                             "explain one image at a time")
        value = float(sigma.flatten()[0])

        def captum(start: int, k: int) -> torch.Tensor:
            # exactly NoiseTunnel._add_noise_to_input: a float32 stdev tensor repeated to
            # the expanded size, one torch.normal draw from the global RNG
            std = torch.tensor(value, device=x.device).repeat((b * k, *x.shape[1:]))
            return torch.normal(0, std).to(x.dtype)
        return captum

    first = chunks.offset()  # the image's index in the caller's batch, whatever the chunk
    gens = [torch.Generator("cpu").manual_seed(int(p["seed"]) + first + i) for i in range(b)]

    def mindlens(start: int, k: int) -> torch.Tensor:
        eps = torch.stack([torch.randn(x.shape[1:], generator=g, dtype=x.dtype)
                           for g in gens for _ in range(k)])
        return eps.to(x.device) * sigma.repeat_interleave(k, dim=0)
    return mindlens
