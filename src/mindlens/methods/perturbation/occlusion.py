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

from ...errors import InputError, MindlensError
from ...explanation import Cost, Explanation
from ...model import Classifier
from ...progress import planned_windows
from ...targets import Targets, probabilities
from ..base import Method, Needs, register
from ..precision import CHOICES as PRECISIONS
from ..precision import at_precision, choose
from . import drilldown
from .incremental import builder
from .patched import Engine
from .scoring import (
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
from .windows import AGGREGATIONS, BORDERS, aggregate, indicator, per_axis, window_starts

MODES = ("auto", "exact", "incremental", "approximate")
#: ``mode="auto"``: the incremental drops of the check windows may differ from the whole
#: model's by float32 rounding (recomputing a layer on a smaller region rounds
#: differently): at most this share of the largest drop or clean score of the image,
#: about 7x the largest difference seen on the asset models and photos
CHECK_TOLERANCE = 1e-4
#: default ``check_windows`` per mode: an incremental window costs about a tenth of a
#: whole-model pass, so each whole-model check window costs about 2 % of the default
#: mode's time on mobilenet_v2 at 224 px (729 windows; 6-11 % for the 3, measured)
CHECK_WINDOWS = {"auto": 3, "approximate": 8, "exact": 0, "incremental": 0}
#: copies per pass in the incremental modes for a 3 x 224 x 224 input (fewer for larger
#: inputs, at least 8): large batches amortise the per-operation overhead of the patch
#: bookkeeping and keep both cores busy in the layers where every copy is a whole map
INCREMENTAL_BATCH = 64
INCREMENTAL_VALUES = INCREMENTAL_BATCH * 3 * 224 * 224


def incremental_batch_size(x: torch.Tensor) -> int:
    """The default number of copies per pass in the incremental modes for inputs like
    ``x``."""
    return max(8, min(INCREMENTAL_BATCH, INCREMENTAL_VALUES // max(1, x[0].numel())))


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
    ``"auto"`` (the default: the exact map, through the incremental engine where the model
    allows it, else through the whole model; ``extras["exact_path"]`` says which and why,
    see :meth:`_fast_exact`), ``"exact"`` (every occluded copy through the whole model: the
    reference), ``"incremental"`` (the same map, recomputing each layer only where the
    window can change it, Krypton-style: see :mod:`.incremental`; no fallback, no check),
    ``"approximate"`` (faster, not exact; see below).

    What "the same map" means: ``"auto"``, ``"incremental"`` and ``"exact"`` compute the
    same function of the model, and their results differ by floating-point rounding only
    (a layer recomputed on a smaller region, channels-last, or another batch size runs
    other kernels). On the asset models and photos the incremental map equalled
    ``"exact"`` run in batches bit for bit at 2 threads (1.4e-5 of the map's maximum off
    at 1 thread), and differed from ``"exact"`` at its CPU default of one copy per pass
    (224 x 224) by at most 1.3e-5: as much as ``"exact"`` differs from itself between
    batch sizes (1.4e-5). ``"auto"``
    checks this on every call: ``check_windows`` windows per image (default 3: the one
    with the largest drop, the first and the last) also run through the whole model, and
    their drops must agree within :data:`CHECK_TOLERANCE` (1e-4) of the image's largest
    drop or clean score, else every window runs through the whole model. With a float64
    model the modes agree to float64 rounding.

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
    *measured* on every call: ``check_windows`` (default 8) evenly spaced windows are
    also run exactly and ``extras["approximation"]`` holds the largest difference,
    absolute and relative to the largest exact drop among them.

    Cost: ``N + 1`` model evaluations per image, ``N`` = number of window positions (in
    the default mode plus the ``check_windows`` run through the whole model; in the
    approximate mode, the windows run plus the check windows plus one clean pass, two
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
                "batch_size": None, "blur_sigma": None, "mode": "auto", "coarse": 2,
                "refine": 0.1, "precision": "auto", "tau": 1.0, "check_windows": None}

    @property
    def signed(self) -> bool:
        return not self.params["positive_only"]

    def validate(self) -> None:
        p = self.params
        self._window = per_axis(p["window"], "window")
        self._stride = per_axis(p["stride"], "stride")
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
        k = p["check_windows"]
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 0):
            raise InputError(f"check_windows must be a non-negative integer or None (the "
                             f"mode's default), got {k!r}")
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
                                    _check_windows(p["check_windows"], p["mode"]))
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
        if mode in ("incremental", "approximate") and (clf.scripted or clf.black_box):
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
        elif mode == "auto":
            d, extras["exact_path"], engine, batch_size = self._fast_exact(
                clf, x, base, targets, positions, window, fill)
        else:
            build, engine = None, None
            if mode == "incremental":
                build, engine = builder(x, base, positions, window, None)
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
            logits=d.logits.detach(),
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

    def _fast_exact(self, clf: Classifier, x: torch.Tensor, base: torch.Tensor,
                    targets: Targets, positions: Sequence[tuple[int, ...]],
                    window: Sequence[int], fill: Fill
                    ) -> tuple[Drops, dict[str, Any], Engine | None, int]:
        """``mode="auto"``: the exact map, through the incremental engine where the model
        allows it, else through the whole model.

        The whole model runs every window when the model is TorchScript or a black box
        (the engine needs its Python code), when the engine raises anything but a mindlens
        error (an operation or a piece of model code it cannot run), and when the check
        fails: ``check_windows`` windows per image (evenly spaced, plus the one with the
        largest drop) also run through the whole model, and their drops must agree with
        the engine's within float32 rounding (:data:`CHECK_TOLERANCE`); a model that
        computes something else on the engine's patched tensors (e.g. a branch on
        ``isinstance(x, torch.Tensor)``) fails it. Returns the drops, what ran and why
        (``extras["exact_path"]``), the engine (``None`` on the whole-model path) and the
        batch size used."""
        p = self.params
        n = len(positions)
        whole_batch = auto_batch_size(p["batch_size"], x)

        def whole(note: str) -> tuple[Drops, dict[str, Any], None, int]:
            d = score_drops(clf, x, targets, p["score"], n, fill, whole_batch)
            return d, {"engine": "whole model", "note": note}, None, whole_batch

        if clf.scripted or clf.black_box:
            kind = "TorchScript" if clf.scripted else "a black box"
            return whole(f"every window ran through the whole model: the model is {kind}, "
                         f"and the incremental engine needs its Python code")
        batch_size = p["batch_size"] or incremental_batch_size(x)
        build, engine = builder(x, base, positions, window, None)
        try:
            d = score_drops(clf, x, targets, p["score"], n, fill, batch_size, build)
        except MindlensError:
            raise
        except Exception as err:  # anything the engine cannot run
            reason = f"{type(err).__name__}: {err}"
            return whole(f"every window ran through the whole model: the incremental "
                         f"engine failed on this model ({reason[:300]})")
        info: dict[str, Any] = {"engine": "incremental", "note": None}
        k = _check_windows(p["check_windows"], "auto")
        if not k:
            info["note"] = "not checked against the whole model (check_windows=0)"
            return d, info, engine, batch_size
        chosen = [_check_sample(d.drops[i], k) for i in range(x.shape[0])]
        fill_check, _ = _subset(fill, build, chosen)
        # the check windows of an image in one pass (a few rows: no memory concern)
        ref = score_drops(clf, x, Targets(d.classes) if targets.score_fn is None else targets,
                          p["score"], [len(c) for c in chosen], fill_check,
                          max(len(c) for c in chosen), logits=d.logits)
        diff, tol = 0.0, 0.0
        for i, c in enumerate(chosen):
            scale = max(float(d.drops[i].abs().max()), float(d.clean[i].abs().max()))
            tol_i = max(CHECK_TOLERANCE * scale, 64 * torch.finfo(d.drops.dtype).eps)
            diff_i = float((ref.drops[i, :, : len(c)] - d.drops[i, :, c]).abs().max())
            if diff_i > tol_i:
                warnings.warn(
                    f"occlusion: the incremental engine's score drops differed from the "
                    f"whole model's by {diff_i:.3g} (rounding allows {tol_i:.3g}); running "
                    f"every window through the whole model instead", stacklevel=3)
                return whole(f"every window ran through the whole model: on the check "
                             f"windows the incremental engine differed from it by "
                             f"{diff_i:.3g} (more than rounding, {tol_i:.3g})")
            diff, tol = max(diff, diff_i), max(tol, tol_i)
        info.update({"check_windows": max(len(c) for c in chosen), "max_abs_difference": diff,
                     "tolerance": tol})
        return Drops(d.drops, d.logits, d.classes, d.clean, d.forwards + ref.forwards,
                     d.calls + ref.calls), info, engine, batch_size

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
        k = _check_windows(p["check_windows"], "approximate")
        sample = (torch.linspace(0, n - 1, min(k, n)).round().long().unique().tolist()
                  if k else [])
        check_build, _ = builder(x, base, positions, window, None)
        fill_check, build_check = _subset(fill, check_build, [sample] * x.shape[0])
        exact = score_drops(clf, x, targets, p["score"], len(sample), fill_check, batch_size,
                            build_check)
        classes = Targets(exact.classes) if targets.score_fn is None else targets

        run_clf, run_x, run_base, dtype = at_precision(clf, x, base,
                                                       choose(p["precision"], clf))
        build, engine = builder(run_x, run_base, positions, window, p["tau"])
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


def _check_windows(value: int | None, mode: str) -> int:
    """``check_windows`` as given, or the mode's default (:data:`CHECK_WINDOWS`)."""
    return CHECK_WINDOWS[mode] if value is None else value


def _check_sample(drops: torch.Tensor, k: int) -> list[int]:
    """``k`` windows of one image's drops ``[T, N]`` to check: the one with the largest
    drop and ``k - 1`` evenly spaced ones."""
    n = drops.shape[1]
    spaced = torch.linspace(0, n - 1, min(k - 1, n)).round().long().tolist() if k > 1 else []
    top = int(drops.abs().nan_to_num(0).amax(0).argmax())
    return sorted({top, *spaced})


def _subset(fill: Fill, build: Build, chosen: Sequence[Sequence[int]]
            ) -> tuple[Fill, Build]:
    """``fill`` and ``build`` for the windows ``chosen[image]`` only (rows of a pass
    index into them)."""
    def fill_some(batch: torch.Tensor, image: int, rows: Sequence[int]) -> None:
        fill(batch, image, [chosen[image][r] for r in rows])

    def build_some(image: int, rows: Sequence[int]) -> Any:
        return build(image, [chosen[image][r] for r in rows])
    return fill_some, build_some
