"""CAMs whose channel weights come from forward passes, not gradients (spec methods-more.md
sections 17.7-17.8): Score-CAM masks the input with each channel, Ablation-CAM zeroes each
channel. Both cost one forward pass per channel; both run without autograd, in large
batches, and Score-CAM in channels-last layout on the CPU.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, ModelError
from ..explanation import Cost, Explanation
from ..model import Classifier
from ..targets import Targets, probabilities
from .base import Needs, register, upsample
from .cam import GradCAM, _LayerMethod
from .perturbation import auto_batch_size, batch_layout

SCORES = ("logit", "prob", "log_prob")
WEIGHTS = ("softmax_over_channels", "score", "score_minus_baseline")
CONSTANT = ("zero_mask", "skip")
RESOLUTIONS = ("layer", "input")


def _positive_int(params: dict[str, Any], key: str, allow_none: bool = False) -> None:
    v = params[key]
    if allow_none and v is None:
        return
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise InputError(f"{key} must be a positive integer{' or None' if allow_none else ''}"
                         f", got {v!r}")


def _choice(params: dict[str, Any], key: str, options: tuple[str, ...]) -> None:
    if params[key] not in options:
        raise InputError(f"{key} must be one of {', '.join(options)}, got {params[key]!r}")


def _chunks(items: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _in_batch_layout(x: torch.Tensor) -> torch.Tensor:
    """A masked batch in the perturbation family's layout (:func:`batch_layout`)."""
    return x.contiguous(memory_format=batch_layout(x))


class _ScoreReader:
    """Reads the explained scores ``[n, T]`` of image ``b`` from a batch of logits."""

    def __init__(self, targets: Targets, classes: torch.Tensor, kind: str) -> None:
        self.fn, self.classes, self.kind = targets.score_fn, classes, kind
        if self.fn is not None and kind != "logit":
            raise InputError(f"score={kind!r} needs class targets; a callable target is "
                             f"its own score (use score='logit')")

    def __call__(self, logits: torch.Tensor, b: int) -> torch.Tensor:
        if self.fn is not None:
            return self.fn(logits).reshape(-1, 1)
        if self.kind == "prob":
            logits = logits.softmax(dim=1)
        elif self.kind == "log_prob":
            logits = logits.log_softmax(dim=1)
        return logits[:, self.classes[b]]


@register
class ScoreCAM(_LayerMethod):
    """Score-CAM (Wang, Wang, Du, Yang, Zhang, Ding, Mardziel, Hu 2020, "Score-CAM:
    Score-Weighted Visual Explanations for Convolutional Neural Networks", CVPR
    workshops, arXiv:1910.01279).

    Each channel ``A^k`` of the layer, upsampled bilinearly to the input and min-max
    scaled to ``[0, 1]`` (``(a - min) / (max - min + norm_eps)``), masks the input; the
    model's score on the masked input is the channel's score ``s_k``; the map is
    ``ReLU(sum_k w_k A^k)`` with ``w = softmax_k(s)`` (``weights``), at the layer's
    resolution, then upsampled like every CAM. The defaults reproduce pytorch-grad-cam
    (``align_corners=True``, logit scores, softmax over channels, a constant channel
    scored on the all-zero mask); the authors' code differs in ``align_corners=False``,
    ``score="prob"``, ``weights="score"``, ``constant_channels="skip"``,
    ``map_resolution="input"`` (ReLU after upsampling).

    Speed: no autograd, masked inputs in batches of ``batch_size`` (``None``: chosen from
    the input size like the perturbation methods' passes, see
    :func:`~mindlens.methods.perturbation.scoring.auto_batch_size`, as a multiple of 8 and
    at least 8: on a CPU, large batches of large images run slower per image, their
    activations falling out of the caches, and oneDNN's kernels for batches of 1 or of odd
    sizes round differently, by up to 1e-3 of the map on mobilenet_v2) in channels-last
    layout, and channels whose upsampled activation is constant
    (all-zero masks: the same zero image) are scored with one forward pass for all of them
    and all images.

    Preview: ``top_channels=N`` scores only the ``N`` channels with the largest Grad-CAM
    contribution ``mean(dy/dA^k) * sum(A^k)`` (one backward pass); the others are given
    the score of the all-zero mask. The error of that guess is measured on every call:
    ``check_channels`` other channels (evenly spaced in the ranking) are scored as well and
    ``extras["preview"]`` gives the largest score difference there (a sample, not a bound).
    """

    name = "scorecam"
    title = "Score-CAM"
    needs = Needs(layer=True, hooks=True)
    meaning = ("Warm regions are where the layer's activation patterns, used as masks that "
               "show only part of the image, keep the class score high.")
    reference = "Wang et al. 2020, CVPR workshops, arXiv:1910.01279"
    defaults = {"layer": "auto", "relu": True, "score": "logit",
                "weights": "softmax_over_channels", "align_corners": True,
                "constant_channels": "zero_mask", "norm_eps": 1e-8, "map_resolution": "layer",
                "batch_size": None, "top_channels": None, "check_channels": 8}

    def validate(self) -> None:
        super().validate()
        p = self.params
        _choice(p, "score", SCORES)
        _choice(p, "weights", WEIGHTS)
        _choice(p, "constant_channels", CONSTANT)
        _choice(p, "map_resolution", RESOLUTIONS)
        _positive_int(p, "batch_size", allow_none=True)
        _positive_int(p, "top_channels", allow_none=True)
        if not isinstance(p["check_channels"], int) or p["check_channels"] < 0:
            raise InputError(f"check_channels must be an integer >= 0, "
                             f"got {p['check_channels']!r}")
        if not isinstance(p["norm_eps"], (int, float)) or p["norm_eps"] < 0:
            raise InputError(f"norm_eps must be a number >= 0, got {p['norm_eps']!r}")

    @property
    def signed(self) -> bool:
        return not self.params["relu"]

    def run(self, clf: Classifier, x: torch.Tensor, targets: Targets) -> Explanation:
        p = self.params
        if x.dim() != 4:
            raise InputError("scorecam works on 2-D images [B, C, H, W]; for volumes use "
                             "gradcam")
        preview = p["top_channels"] is not None
        if preview:  # Grad-CAM contributions rank the channels (needs one backward pass)
            name, _ = self.resolve_layer(clf, x)
            A, grads, logits, classes, _, _ = GradCAM(layer=name).layer_gradients(
                clf, x, targets)
            contribution = (grads.flatten(3).mean(3) * A.flatten(2).sum(2)[:, None])
            rank = contribution.amax(dim=1).argsort(dim=1, descending=True)  # [B, K]
        else:
            name, _, A, logits = self.layer_activations(clf, x)
            classes = targets.resolve(logits)
        read = _ScoreReader(targets, classes, p["score"])
        batch_size = p["batch_size"] or max(8, auto_batch_size(None, x) // 8 * 8)
        B, K, T = A.shape[0], A.shape[1], classes.shape[1]
        size = tuple(x.shape[2:])
        scores = torch.empty(B, T, K, dtype=logits.dtype, device=logits.device)
        scored = torch.zeros(B, K, dtype=torch.bool, device=A.device)
        constant = torch.zeros(B, K, dtype=torch.bool, device=A.device)
        forwards = 1
        check: list[torch.Tensor] = []
        with clf.patched(), torch.inference_mode():
            zero_logits = clf(torch.zeros_like(x[:1]))
            forwards += 1
            for b in range(B):
                if preview:
                    n = min(p["top_channels"], K)
                    rest = rank[b, n:]
                    m = min(p["check_channels"], len(rest))
                    picks = rest[torch.linspace(0, len(rest) - 1, m).round().long()] if m \
                        else rest[:0]
                    check.append(picks)
                    channels = torch.cat([rank[b, :n], picks])
                else:
                    channels = torch.arange(K, device=A.device)
                for idx in _chunks(channels, batch_size):
                    up = F.interpolate(A[b:b + 1, idx], size=size, mode="bilinear",
                                       align_corners=p["align_corners"])[0]
                    lo = up.flatten(1).amin(1)
                    hi = up.flatten(1).amax(1)
                    flat = hi == lo
                    constant[b, idx[flat]] = True
                    live = idx[~flat]
                    if len(live) == 0:
                        continue
                    mask = (up[~flat] - lo[~flat, None, None]) / (
                        hi[~flat, None, None] - lo[~flat, None, None] + p["norm_eps"])
                    batch = _in_batch_layout(x[b:b + 1] * mask[:, None].to(x.dtype))
                    scores[b, :, live] = read(clf(batch), b).T.to(scores.dtype)
                    scored[b, live] = True
                    forwards += len(live)
            for b in range(B):
                scores[b][:, constant[b]] = read(zero_logits, b).T.to(scores.dtype)
        extras: dict[str, Any] = {"constant_channels": constant.sum(1).tolist(),
                                  "masked_forwards": forwards - 2, "batch_size": batch_size}
        zero_scores = torch.stack([read(zero_logits, b)[0] for b in range(B)])  # [B, T]
        if preview:
            extras["preview"] = self._preview_error(scores, zero_scores, check, scored,
                                                    constant)
            unscored = ~(scored | constant)
            scores = torch.where(unscored[:, None], zero_scores[:, :, None], scores)
            scored = scored | unscored
        weights = self._weights(scores, zero_scores, constant)
        native = torch.einsum("btk,bk...->bt...", weights.to(A.dtype), A)
        if p["map_resolution"] == "input":
            native = F.interpolate(native, size=size, mode="bilinear",
                                   align_corners=p["align_corners"])
        if p["relu"]:
            native = native.clamp_min(0)
        extras["weights"] = weights
        return Explanation(
            logits=logits.detach(),
            method=self.name, maps=upsample(native, size), targets=classes,
            scores=targets.scores(logits, classes).detach(),
            probs=probabilities(logits.detach(), classes), signed=self.signed,
            params=dict(self.layer_name(name)), native_shape=tuple(A.shape[2:]),
            cost=Cost(forward=forwards, backward=T if preview else 0), extras=extras,
        )

    def _weights(self, scores: torch.Tensor, zero: torch.Tensor, constant: torch.Tensor
                 ) -> torch.Tensor:
        """Channel weights ``[B, T, K]`` from the scores; skipped channels weigh 0."""
        how = self.params["weights"]
        skip = constant[:, None].expand_as(scores) if \
            self.params["constant_channels"] == "skip" else torch.zeros_like(scores,
                                                                             dtype=torch.bool)
        if how == "softmax_over_channels":
            w = scores.masked_fill(skip, float("-inf")).softmax(dim=2)
            return torch.nan_to_num(w, nan=0.0)  # every channel skipped: no weight at all
        w = scores - zero[:, :, None] if how == "score_minus_baseline" else scores
        return w.masked_fill(skip, 0.0)

    def _preview_error(self, scores: torch.Tensor, zero: torch.Tensor,
                       check: list[torch.Tensor], scored: torch.Tensor,
                       constant: torch.Tensor) -> dict[str, Any]:
        """How far the guess (the all-zero mask's score) is from the true score at the
        check channels, absolute and relative to the largest score change ``|s_k - s_0|``
        among the scored channels."""
        diffs = [(scores[b][:, picks[~constant[b, picks]]] - zero[b][:, None]).abs().flatten()
                 for b, picks in enumerate(check)]
        change = (scores - zero[:, :, None]).abs().masked_fill(~scored[:, None], 0.0)
        scale = float(change.max()) if change.numel() else 0.0
        info: dict[str, Any] = {
            "top_channels": self.params["top_channels"], "channels": int(scores.shape[2]),
            "check_channels": sum(len(c) for c in check),
            "note": "channels not scored get the all-zero mask's score; the error of that "
                    "guess is measured at the check channels: a sample, not a bound"}
        flat = torch.cat(diffs) if diffs else scores.new_zeros(0)
        if flat.numel():
            err = float(flat.max())
            info.update({"max_abs_score_error": err, "max_abs_score_change": scale,
                         "relative_error": err / scale if scale > 0 else None})
        return info


@register
class AblationCAM(_LayerMethod):
    """Ablation-CAM (Desai & Ramaswamy 2020, "Ablation-CAM: Visual Explanations for Deep
    Convolutional Network via Gradient-free Localization", WACV).

    Channel weight ``w_k = (y - y_k) / y``: the relative drop of the class score ``y``
    when channel ``k`` of the layer is set to ``ablation_value`` (``"zero"`` or a number;
    ``normalize_by_score=False`` gives the plain drop ``y - y_k``); map
    ``ReLU(sum_k w_k A^k)``. A forward hook hands the model the ablated activations, one
    row per channel, in batches of ``batch_size``; the layers before the target layer run
    once per batch on one image (a row of the batch is checked against the clean score,
    and models that cannot take that run the image once per row). With
    ``ablation_value="zero"`` on a post-ReLU layer this equals pytorch-grad-cam, which
    ablates with ``min(A) - 1e7`` where ``min(A) != 0``.
    """

    name = "ablationcam"
    title = "Ablation-CAM"
    needs = Needs(layer=True, hooks=True)
    meaning = ("Warm regions are where the activation patterns are whose removal lowers "
               "the class score most.")
    reference = "Desai & Ramaswamy 2020, WACV"
    defaults = {"layer": "auto", "relu": True, "ablation_value": "zero",
                "normalize_by_score": True, "batch_size": 32}

    def validate(self) -> None:
        super().validate()
        _positive_int(self.params, "batch_size")
        v = self.params["ablation_value"]
        if v != "zero" and (not isinstance(v, (int, float)) or isinstance(v, bool)):
            raise InputError(f"ablation_value must be 'zero' or a number, got {v!r}")

    @property
    def signed(self) -> bool:
        return not self.params["relu"]

    def run(self, clf: Classifier, x: torch.Tensor, targets: Targets) -> Explanation:
        p = self.params
        name, layer, A, logits = self.layer_activations(clf, x)
        classes = targets.resolve(logits)
        read = _ScoreReader(targets, classes, "logit")
        y = targets.scores(logits, classes)  # [B, T]
        B, K, T = A.shape[0], A.shape[1], classes.shape[1]
        value = 0.0 if p["ablation_value"] == "zero" else float(p["ablation_value"])
        ablated = torch.empty(B, T, K, dtype=y.dtype, device=y.device)
        hook = _Ablate(name)
        forwards, shared = 1, True
        with clf.patched() as patch, torch.inference_mode():
            patch.forward_hook(layer, hook)
            for b in range(B):
                for idx in _chunks(torch.arange(K, device=A.device), p["batch_size"]):
                    rows = A[b:b + 1].repeat(len(idx), *([1] * (A.dim() - 1)))
                    rows[torch.arange(len(idx)), idx] = value
                    if shared and b == 0 and idx[0] == 0:  # one clean row checks the trick
                        out = hook.run(clf, x[b:b + 1], torch.cat([rows, A[b:b + 1]]))
                        ok = out is not None and out.shape[0] == len(idx) + 1 and \
                            torch.allclose(read(out[-1:], b), y[b:b + 1], rtol=1e-4,
                                           atol=1e-5 * max(1.0, float(y[b].abs().max())))
                        forwards += 1
                        if ok:
                            ablated[b, :, idx] = read(out[:-1], b).T
                            forwards += len(idx)
                            continue
                        shared = False
                    x_rows = x[b:b + 1] if shared else x[b:b + 1].expand(len(idx),
                                                                         *x.shape[1:])
                    out = hook.run(clf, x_rows, rows)
                    if out is None or out.shape[0] != len(idx):
                        raise ModelError(f"the model's output does not follow a batch of "
                                         f"ablated activations at layer {name!r}")
                    ablated[b, :, idx] = read(out, b).T
                    forwards += len(idx)
        drop = y[:, :, None] - ablated
        if p["normalize_by_score"]:
            if bool((y <= 1e-6).any()):
                warnings.warn("ablationcam: a class score is <= 1e-6, so dividing the drops "
                              "by it flips or blows up the weights; use "
                              "normalize_by_score=False", stacklevel=3)
            drop = drop / y[:, :, None]
        native = torch.einsum("btk,bk...->bt...", drop.to(A.dtype), A)
        if p["relu"]:
            native = native.clamp_min(0)
        return Explanation(
            logits=logits.detach(),
            method=self.name, maps=upsample(native, tuple(x.shape[2:])), targets=classes,
            scores=y, probs=probabilities(logits, classes), signed=self.signed,
            params=dict(self.layer_name(name), score="logit"),
            native_shape=tuple(A.shape[2:]), cost=Cost(forward=forwards),
            extras={"weights": drop, "shared_prefix": shared},
        )


class _Ablate:
    """Forward hook that replaces the layer's output by a given batch of activations."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rows: torch.Tensor | None = None
        self.calls = 0

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> torch.Tensor:
        self.calls += 1
        if self.calls > 1:
            raise ModelError(f"layer {self.name!r} runs more than once in one forward pass; "
                             f"choose a layer that runs once")
        assert self.rows is not None
        return self.rows

    def run(self, clf: Classifier, x: torch.Tensor, rows: torch.Tensor
            ) -> torch.Tensor | None:
        """The logits with ``rows`` in place of the layer's output; ``None`` when the model
        cannot take a batch of another size than its input (shared-prefix trick only)."""
        self.rows, self.calls = rows, 0
        if x.shape[0] == rows.shape[0]:
            return clf(x)
        try:  # the model sees a batch of one, the layers after the hook one of len(rows)
            out = clf.module(x)
        except RuntimeError:
            return None
        if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
            out = out[0]
        if not isinstance(out, torch.Tensor) or out.shape[:1] != rows.shape[:1] or \
                out.dim() != 2:
            return None
        return out[:, clf.logit_offset:]
