"""Occlusion (Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional
Networks", ECCV, arXiv:1311.2901): slide a patch filled with a baseline value over the
image and record how much the class score drops for each patch position.

The pixel map is the score drop aggregated (by default averaged) over all windows that
cover the pixel, as in Captum's ``Occlusion``; the coarse grid of drops per window position
(the Zeiler & Fergus presentation) is in ``extras["grid"]``. Works on 2-D images
``[B, C, H, W]`` and 3-D volumes ``[B, C, D, H, W]`` and needs nothing but the model's
outputs.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import InputError
from ..explanation import Cost, Explanation
from ..model import Classifier
from ..progress import planned_windows
from ..targets import Targets, probabilities
from . import drilldown
from .base import Method, Needs, register
from .incremental import Engine, PatchTensor, occluded_batch
from .perturbation import (
    Build,
    Drops,
    Fill,
    auto_batch_size,
    baseline_param,
    check_baseline,
    check_batch_size,
    check_image_or_volume,
    check_score,
    resolve_baseline,
    score_drops,
)
from .precision import CHOICES as PRECISIONS
from .precision import at_precision, choose

BORDERS = ("cover", "truncate")
AGGREGATIONS = ("mean", "sum", "max")
MODES = ("exact", "incremental", "approximate")
#: copies per pass in the incremental modes for a 3 x 224 x 224 input (fewer for larger
#: inputs, at least 8): large batches amortise the per-operation overhead of the patch
#: bookkeeping and keep both cores busy in the layers where every copy is a whole map
INCREMENTAL_BATCH = 64
INCREMENTAL_VALUES = INCREMENTAL_BATCH * 3 * 224 * 224


def incremental_batch_size(x: torch.Tensor) -> int:
    """The default number of copies per pass in the incremental modes for inputs like
    ``x``."""
    return max(8, min(INCREMENTAL_BATCH, INCREMENTAL_VALUES // max(1, x[0].numel())))


def _per_axis(value: Any, name: str) -> tuple[int, ...] | None:
    """``None``, a positive int, or a tuple of positive ints -> a tuple (or None)."""
    if value is None:
        return None
    values = (value,) if isinstance(value, int) else tuple(value)
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < 1
                         for v in values):
        raise InputError(
            f"{name} must be a positive integer or one per spatial axis, e.g. 16 or (16, 16); "
            f"got {value!r}" + (" (a stride of 0 would never move the window)"
                               if name == "stride" else "")
        )
    return values


def window_starts(size: int, window: int, stride: int, border: str) -> list[int]:
    """Start index of each window along one axis.

    ``"cover"``: ``0, s, 2s, ...`` while the window fits, plus a last window flush with the
    border if the image would otherwise have uncovered pixels. ``"truncate"`` (Captum):
    ``0, s, ..., ceil((size - k) / s) * s``; the last window may stick out and is cut.
    """
    if border == "truncate":
        return [i * stride for i in range(math.ceil((size - window) / stride) + 1)]
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def indicator(size: int, window: int, starts: Sequence[int], like: torch.Tensor
              ) -> torch.Tensor:
    """``[n_windows, size]``: 1 where window ``p`` covers index ``i``."""
    idx = torch.arange(size, device=like.device)
    s = torch.tensor(list(starts), device=like.device)[:, None]
    return ((idx >= s) & (idx < s + window)).to(like.dtype)


def aggregate(grid: torch.Tensor, ind: Sequence[torch.Tensor], how: str) -> torch.Tensor:
    """Pixel map ``[B, T, *spatial]`` from the window grid ``[B, T, *n]``.

    Windows form a product over the axes, so the sum over the windows covering a pixel is
    a chain of matrix products with the per-axis indicators. Pixels that no window covers
    (only when ``stride > window``) are NaN.
    """
    dims = grid.dim() - 2
    if how == "max":
        out = torch.full((*grid.shape[:2], *(m.shape[1] for m in ind)), -math.inf,
                         dtype=grid.dtype, device=grid.device)
        for pos in itertools.product(*(range(m.shape[0]) for m in ind)):
            sl = tuple(m[p].nonzero().flatten() for m, p in zip(ind, pos, strict=True))
            sl = tuple(slice(int(s[0]), int(s[-1]) + 1) for s in sl)
            region = out[(slice(None), slice(None), *sl)]
            torch.maximum(region, grid[(slice(None), slice(None), *pos)]
                          .view(*grid.shape[:2], *([1] * dims)), out=region)
        return out.masked_fill(out == -math.inf, math.nan)
    total = grid
    for axis, m in enumerate(ind):
        total = torch.tensordot(total.movedim(2 + axis, -1), m, dims=1).movedim(-1, 2 + axis)
    count = _count(ind)
    if how == "sum":
        return total.masked_fill(count == 0, math.nan)
    return total / count.masked_fill(count == 0, math.nan)


def _count(ind: Sequence[torch.Tensor]) -> torch.Tensor:
    count = ind[0].sum(0)
    for m in ind[1:]:
        count = count[..., None] * m.sum(0)
    return count


@register
class Occlusion(Method):
    """Sliding-window occlusion (Zeiler & Fergus 2014).

    Parameters: ``window`` and ``stride`` (int or one per spatial axis; default about 7 %
    of each side, e.g. 16 at 224, and half the window), ``baseline`` (``"zero"`` in model
    space, ``"mean"``, ``"blur"``, a pixel value such as 0.5, a model-space tensor or a
    callable), ``score`` (``"prob"``, ``"logit"``, ``"log_prob"``), ``aggregation`` of the
    windows that cover a pixel (``"mean"`` as Captum, ``"sum"`` as Zennit, ``"max"``),
    ``border`` (``"cover"`` adds a last window flush with the border; ``"truncate"`` cuts
    the last window as Captum does), ``positive_only`` (clip negative drops, as Rieke et
    al. 2018), ``batch_size`` (perturbed copies per forward pass: bounds memory; ``None``
    chooses by device and input size: 64 copies of a 224 x 224 image in the incremental
    modes, fewer for larger inputs),
    ``blur_sigma`` (pixels, for ``baseline="blur"``; default half the window), ``mode``:
    ``"exact"`` (every occluded copy through the whole model), ``"incremental"`` (the same
    map, recomputing each layer only where the window can change it, Krypton-style: see
    :mod:`mindlens.methods.incremental`), ``"approximate"`` (faster, not exact; see
    below).

    The approximate mode combines Krypton's adaptive drill-down (:mod:`.drilldown`) with
    lower precision: every ``coarse``-th window position per axis is run first (default
    2: about a quarter of the windows), the others get the linear interpolation of their
    neighbours' drops, and the ``refine`` share (default 0.1) of those with the largest
    interpolated drop are then run as well. Windows run incrementally in ``precision``
    (``"auto"``: bfloat16 where the device computes it natively, e.g. a CPU with
    AVX-512 BF16, else float32); ``tau`` < 1 adds Krypton's projective-field cap. What is
    approximate, and so where the error comes from: interpolated windows (no bound: a
    drop that peaks between two run windows is missed) and bfloat16 rounding (8-bit
    mantissa, about 0.4 % of each activation, accumulated over the layers). The error is
    *measured* on every call: ``check_windows`` evenly spaced windows are also run
    exactly and ``extras["approximation"]`` holds the largest difference, absolute and
    relative to the largest exact drop among them.

    Cost: ``N + 1`` model evaluations per image, ``N`` = number of window positions (in
    the approximate mode, the windows run plus the check windows plus one clean pass, two
    at a lower precision).
    """

    name = "occlusion"
    title = "Occlusion"
    needs = Needs()
    meaning = ("Bright pixels are those whose covering up lowered the class score most; "
               "blue ones raised it when covered.")
    reference = "Zeiler & Fergus 2014, ECCV, arXiv:1311.2901"
    defaults = {"window": None, "stride": None, "baseline": "zero", "score": "prob",
                "aggregation": "mean", "border": "cover", "positive_only": False,
                "batch_size": None, "blur_sigma": None, "mode": "exact", "coarse": 2,
                "refine": 0.1, "precision": "auto", "tau": 1.0, "check_windows": 8}

    @property
    def signed(self) -> bool:
        return not self.params["positive_only"]

    def validate(self) -> None:
        p = self.params
        self._window = _per_axis(p["window"], "window")
        self._stride = _per_axis(p["stride"], "stride")
        check_baseline(p["baseline"])
        check_score(p["score"])
        check_batch_size(p["batch_size"])
        tau = p["tau"]
        if not isinstance(tau, (int, float)) or not 0 < tau <= 1:
            raise InputError(f"tau (approximate mode) must be in (0, 1], got {tau!r}")
        if not isinstance(p["coarse"], int) or isinstance(p["coarse"], bool) or \
                p["coarse"] < 1:
            raise InputError(f"coarse (approximate mode: run every coarse-th window per axis "
                             f"first) must be a positive integer, got {p['coarse']!r}")
        refine = p["refine"]
        if not isinstance(refine, (int, float)) or isinstance(refine, bool) or \
                not 0 <= refine <= 1:
            raise InputError(f"refine (approximate mode: share of the skipped windows run "
                             f"in the second pass) must be in [0, 1], got {refine!r}")
        if not isinstance(p["check_windows"], int) or p["check_windows"] < 0:
            raise InputError(f"check_windows must be a non-negative integer, got "
                             f"{p['check_windows']!r}")
        for key, allowed in (("aggregation", AGGREGATIONS), ("border", BORDERS),
                             ("mode", MODES), ("precision", PRECISIONS)):
            if p[key] not in allowed:
                raise InputError(f"{key} must be one of {', '.join(allowed)}, got {p[key]!r}")

    #: what the cost warning of :mod:`mindlens.progress` suggests
    faster = ("mode='incremental' (the same map, several times faster) or 'approximate' "
              "(a preview), or a larger stride/window (CLI: --occlusion-mode, --stride, "
              "--window)")

    def passes(self, clf: Classifier, x: torch.Tensor) -> int:
        """Model passes of one call: windows (per the mode) plus one clean pass, per image."""
        p = self.params
        window, stride = self.geometry(tuple(x.shape[2:]))
        n = math.prod(len(window_starts(s, w, st, p["border"]))
                      for s, w, st in zip(x.shape[2:], window, stride, strict=True))
        per_image = planned_windows(n, len(window), p["mode"], p["coarse"], p["refine"],
                                    p["check_windows"])
        return x.shape[0] * (per_image + 1)

    def geometry(self, spatial: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Window and stride per axis for an input of this spatial size."""
        d = len(spatial)
        window = self._window or tuple(max(1, round(s * 16 / 224)) for s in spatial)
        if len(window) == 1:
            window = window * d
        stride = self._stride or tuple(max(1, w // 2) for w in window)
        if len(stride) == 1:
            stride = stride * d
        if len(window) != d or len(stride) != d:
            raise InputError(
                f"window {window} and stride {stride} must have one value per spatial axis "
                f"of the input ({d}: {tuple(spatial)})"
            )
        too_big = [(w, s) for w, s in zip(window, spatial, strict=True) if w > s]
        if too_big:
            raise InputError(
                f"the occlusion window {window} is larger than the image {tuple(spatial)}; "
                f"use a window no larger than the image in every axis"
            )
        return window, stride

    def run(self, clf: Classifier, x: torch.Tensor, targets: Targets) -> Explanation:
        check_image_or_volume(x, "occlusion")
        p = self.params
        x = x.detach()
        spatial = tuple(x.shape[2:])
        window, stride = self.geometry(spatial)
        starts = [window_starts(s, w, st, p["border"])
                  for s, w, st in zip(spatial, window, stride, strict=True)]
        sigma = p["blur_sigma"] or tuple(w / 2 for w in window)
        if isinstance(sigma, (int, float)):
            sigma = (float(sigma),) * len(spatial)
        base = resolve_baseline(p["baseline"], clf, x, sigma)
        positions = list(itertools.product(*starts))
        slices = [tuple(slice(s, s + w) for s, w in zip(pos, window, strict=True))
                  for pos in positions]

        def fill(batch: torch.Tensor, image: int, items: Sequence[int]) -> None:
            for row, item in enumerate(items):
                sl = (slice(None), *slices[item])
                batch[row][sl] = base[image][sl]

        mode = p["mode"]
        if mode != "exact" and (clf.scripted or clf.black_box):
            warnings.warn(f"occlusion: mode={mode!r} needs to run the model's Python code; "
                          f"this model is a black box or TorchScript, so every window runs "
                          f"through the whole model (mode='exact')", stacklevel=2)
            mode = "exact"
        batch_size = p["batch_size"] or (incremental_batch_size(x) if mode != "exact" else
                                         auto_batch_size(None, x))
        shape = tuple(len(s) for s in starts)
        extras: dict[str, Any] = {}
        if mode == "approximate":
            d, extras["approximation"], engine = self._drill_down(
                clf, x, base, targets, positions, window, shape, fill, batch_size, starts)
        else:
            build, engine = None, None
            if mode == "incremental":
                build, engine = _incremental(x, base, positions, window, None)
            d = score_drops(clf, x, targets, p["score"], len(positions), fill, batch_size,
                            build)
        grid = d.drops.reshape(*d.drops.shape[:2], *shape)
        if p["positive_only"]:
            grid = grid.clamp_min(0)
        ind = [indicator(s, w, st, grid) for s, w, st in zip(spatial, window, starts,
                                                              strict=True)]
        maps = aggregate(grid, ind, p["aggregation"])
        if torch.isnan(maps).any():
            warnings.warn(
                f"occlusion: stride {stride} is larger than window {window}, so some pixels "
                f"are covered by no window; they are NaN in the map", stacklevel=2)
        return Explanation(
            method=self.name, maps=maps, targets=d.classes, scores=d.clean,
            probs=probabilities(d.logits, d.classes), signed=not p["positive_only"],
            params=dict(p, window=window, stride=stride, blur_sigma=tuple(sigma), mode=mode,
                        batch_size=batch_size, baseline=baseline_param(p["baseline"])),
            native_shape=tuple(grid.shape[2:]),
            cost=Cost(forward=d.forwards),
            extras={"grid": grid, "starts": starts, "forward_calls": d.calls,
                    "full_recompute_ops": dict(engine.fallbacks) if engine else {},
                    **extras},
        )

    def _drill_down(self, clf: Classifier, x: torch.Tensor, base: torch.Tensor,
                    targets: Targets, positions: Sequence[tuple[int, ...]],
                    window: Sequence[int], shape: Sequence[int], fill: Fill,
                    batch_size: int, starts: Sequence[Sequence[int]]
                    ) -> tuple[Drops, dict[str, Any], Engine]:
        """The approximate mode. First ``check_windows`` evenly spaced windows run
        exactly (float32, incremental: the exact map's values); that pass also gives the
        clean scores and fixes the target classes. Then the drill-down (coarse pass,
        interpolation in window position, refinement) runs incrementally at the chosen
        precision, and the check windows measure its error. The returned :class:`Drops`
        holds the exact clean scores and the total cost (one clean pass, and one more at a
        lower precision)."""
        p = self.params
        n = len(positions)
        sample = (torch.linspace(0, n - 1, min(p["check_windows"], n)).round().long()
                  .unique().tolist() if p["check_windows"] else [])
        check_build, _ = _incremental(x, base, positions, window, None)
        fill_check, build_check = _subset(fill, check_build, [sample] * x.shape[0])
        exact = score_drops(clf, x, targets, p["score"], len(sample), fill_check, batch_size,
                            build_check)
        classes = Targets(exact.classes) if targets.score_fn is None else targets

        run_clf, run_x, run_base, dtype = at_precision(clf, x, base,
                                                       choose(p["precision"], clf))
        build, engine = _incremental(run_x, run_base, positions, window, p["tau"])
        items, per_axis = drilldown.coarse_items(shape, p["coarse"])
        fill_coarse, build_coarse = _subset(fill, build, [items] * x.shape[0])
        first = score_drops(run_clf, run_x, classes, p["score"], len(items), fill_coarse,
                            batch_size, build_coarse,
                            logits=exact.logits if run_clf is clf else None)
        coarse = first.drops.reshape(*first.drops.shape[:2], *(len(a) for a in per_axis))
        mats = [drilldown.interpolation_matrix(axis_starts, a, coarse) for axis_starts, a in
                zip(starts, per_axis, strict=True)]
        drops = drilldown.interpolate(coarse, mats).flatten(2).clone()
        drops[:, :, items] = first.drops
        more = drilldown.refinement(drops.reshape(*drops.shape[:2], *shape), items,
                                    p["refine"])
        forwards, calls = exact.forwards + first.forwards, exact.calls + first.calls
        if any(more):
            fill_more, build_more = _subset(fill, build, more)
            second = score_drops(run_clf, run_x, classes, p["score"], [len(m) for m in more],
                                 fill_more, batch_size, build_more, logits=first.logits)
            for i, chosen in enumerate(more):
                drops[i, :, chosen] = second.drops[i, :, : len(chosen)]
            forwards, calls = forwards + second.forwards, calls + second.calls
        run = len(items) + len(more[0])
        info: dict[str, Any] = {
            "precision": str(dtype).replace("torch.", ""), "coarse": p["coarse"],
            "refine": p["refine"], "tau": p["tau"], "windows": n, "run": run,
            "interpolated": n - run, "check_windows": len(sample)}
        if sample:
            err = float((drops[:, :, sample] - exact.drops).abs().max())
            scale = float(exact.drops.abs().max())
            info.update({"max_abs_error": err, "max_abs_exact_drop": scale,
                         # None (not NaN) when no checked window moved the score at all
                         "relative_error": err / scale if scale > 0 else None})
        return Drops(drops, exact.logits, exact.classes, exact.clean, forwards, calls), \
            info, engine


def _subset(fill: Fill, build: Build, chosen: Sequence[Sequence[int]]
            ) -> tuple[Fill, Build]:
    """``fill`` and ``build`` for the windows ``chosen[image]`` only (rows of a pass
    index into them)."""
    def fill_some(batch: torch.Tensor, image: int, rows: Sequence[int]) -> None:
        fill(batch, image, [chosen[image][r] for r in rows])

    def build_some(image: int, rows: Sequence[int]) -> Any:
        return build(image, [chosen[image][r] for r in rows])
    return fill_some, build_some


def _incremental(x: torch.Tensor, base: torch.Tensor, positions: Sequence[tuple[int, ...]],
                 window: Sequence[int], tau: float | None) -> tuple[Build, Engine]:
    """A ``build(image, items)`` that makes occluded copies as patched tensors for
    incremental inference, and the engine that caches each image's clean activations."""
    engine = Engine(tau if tau is not None and tau < 1 else None)
    current = [-1]

    def build(image: int, items: Sequence[int]) -> PatchTensor:
        if image != current[0]:
            engine.reset()
            current[0] = image
        engine.pos = 0
        # at least two copies: a batch axis of 1 then marks input-independent tensors
        chosen = [positions[i] for i in items] * (2 if len(items) == 1 else 1)
        return occluded_batch(engine, x[image : image + 1], base[image : image + 1],
                              chosen, window)
    return build, engine


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of flattened maps ``[B, T, ...]`` -> ``[B, T]`` (NaN when one
    map is constant)."""
    a = a.flatten(2).double()
    b = b.flatten(2).double()
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    denom = a.norm(dim=-1) * b.norm(dim=-1)
    return (a * b).sum(-1) / denom.masked_fill(denom == 0, math.nan)


def _ranks(a: torch.Tensor) -> torch.Tensor:
    flat = a.flatten(2)
    return flat.argsort(-1).argsort(-1).to(torch.float64)


def baseline_sensitivity(clf: Classifier, x: Any, baselines: Sequence[Any],
                         target: Any = None, top_k: int = 1, **params: Any
                         ) -> dict[str, Any]:
    """How much the occlusion map changes with the occluding value.

    Runs :class:`Occlusion` once per baseline (same window, stride, score, targets) and
    compares every pair of maps per image and target with the Pearson correlation of the
    pixel values and the Spearman rank correlation. Returns::

        {"baselines": [names], "explanations": {name: Explanation},
         "pairs": [{"a": name, "b": name, "pearson": [[per image, per target]],
                    "spearman": [[...]], "mean_pearson": float, "mean_spearman": float}],
         "min_pearson": float}

    A low ``min_pearson`` means the map depends on the arbitrary choice of the occluding
    value (Zeiler & Fergus' grey square looks like atrophy on an MRI, for instance) and
    should be read with care.
    """
    if len(baselines) < 2:
        raise InputError("baseline sensitivity needs at least two baselines, e.g. zero,mean,blur")
    if not isinstance(x, torch.Tensor) or x.dim() == 4:
        x = clf.preprocess(x)
    names = [b if isinstance(b, str) else repr(b) if isinstance(b, (int, float))
             else f"baseline {i}" for i, b in enumerate(baselines)]
    classes = None
    explanations: dict[str, Explanation] = {}
    for name, base in zip(names, baselines, strict=True):
        t = Targets(target, top_k) if classes is None else Targets(classes)
        e = Occlusion(baseline=base, **params).explain(clf, x, t)
        classes = e.targets if target is None or not callable(target) else None
        explanations[name] = e
    pairs = []
    for a, b in itertools.combinations(names, 2):
        ma, mb = explanations[a].maps, explanations[b].maps
        pear = _pearson(ma, mb)
        spear = _pearson(_ranks(ma), _ranks(mb))
        pairs.append({"a": a, "b": b, "pearson": pear.tolist(), "spearman": spear.tolist(),
                      "mean_pearson": float(pear.nanmean()),
                      "mean_spearman": float(spear.nanmean())})
    return {"baselines": names, "explanations": explanations, "pairs": pairs,
            "min_pearson": min(p["mean_pearson"] for p in pairs)}
