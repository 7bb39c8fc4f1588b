"""Methods x metrics over a dataset, saved as it goes, summarised as the criteria table.

``evaluate(clf, images, masks, methods, out_dir)`` explains every image with every method
(its top-1 class), computes the per-image metrics of :mod:`mindlens.metrics` and appends
one row per (method, image) to ``results.jsonl``, the run's journal (:mod:`mindlens.runs`:
one fsync'd append per batch, each row naming its image and the image's content hash).
The run's ``manifest.json`` (model weights hash and card, every image and mask by content
hash, the methods with all their parameters, the settings, the mindlens version) decides
what a restart into the same ``out_dir`` does: the same run resumes, skipping every
(method, image) already recorded; another model, other data or other settings are refused
in one line unless ``overwrite=True``. Images run in fixed batches, and a batch that was
cut off is computed whole again, so a resumed run gives the same numbers bit for bit as an
uninterrupted one (the measured times aside). At the end ``results.csv``,
``criteria.json`` (the table, see :mod:`mindlens.metrics.criteria`) are written atomically
(temporary file, then rename).

With ``colour_check=True`` every method that gives per-channel relevance is also run on the
colour-shortcut benchmark of :mod:`mindlens.demo.colour` (the bundled colour-cue model and
its control, independent of the evaluated model), which grades the "colour bias" criterion.
"""

from __future__ import annotations

import csv
import json
import math
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import methods as registry
from . import metrics as M
from .errors import InputError, MindlensError
from .io import check_pixels, display_name, readable
from .metrics._common import flat
from .metrics.cost import ACCESS_LEVELS
from .metrics.criteria import CriteriaTable, summarize
from .model import Classifier, ImageLike
from .runs import (
    Journal,
    RunWriteError,
    atomic_open,
    describe,
    input_hash,
    make_manifest,
    model_fingerprint,
    open_run,
    write_atomic,
)
from .targets import Targets

MaskLike = np.ndarray | torch.Tensor | str | Path | None
Progress = Callable[[str, int, int], None]
RESULTS = "results.jsonl"
#: the final files of an evaluation folder (``overwrite`` removes them with the journal)
OUTPUTS = ("results.csv", "criteria.json", "criteria.html")
#: the fields that make a row of the journal unique and say which input it is about
KEY = ("method", "image", "input_hash")


def image_ids(images: Sequence[ImageLike] | torch.Tensor) -> list[str]:
    """A stable id per image: the file name for paths, else ``image_<index>``."""
    out = []
    for i, im in enumerate(images):
        out.append(display_name(Path(im).name) if isinstance(im, (str, Path))
                   else f"image_{i:05d}")
    if len(set(out)) != len(out):
        out = [f"{i:05d}_{name}" for i, name in enumerate(out)]
    return out


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def collect(data_dir: str | Path, masks_dir: str | Path | None = None
            ) -> tuple[list[Path], list[Path | None]]:
    """Image files of ``data_dir`` (sorted) and, per image, the mask file in ``masks_dir``
    with the same stem (any image suffix; ``None`` where there is none), for a CLI. A file
    that cannot be read is skipped with a warning naming it (:func:`mindlens.io.readable`),
    so one bad file does not stop the others."""
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(f"{display_name(root)} is not a folder of images")
    found = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {display_name(root)}")
    images = readable(found, what=f"images in {display_name(root)}")
    if masks_dir is None:
        return images, [None] * len(images)
    mroot = Path(masks_dir)
    if not mroot.is_dir():
        raise InputError(f"{mroot} is not a folder of masks")
    by_stem = {p.stem: p for p in mroot.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    return images, [by_stem.get(p.stem) for p in images]


def load_mask(mask: MaskLike, size: tuple[int, int], image_id: str) -> torch.Tensor | None:
    """One mask -> bool ``[H, W]`` at the model's input size (nearest-neighbour resize, as
    the image itself is resized); ``None`` stays ``None`` (no ground truth)."""
    if mask is None:
        return None
    if isinstance(mask, (str, Path)):
        from PIL import Image

        try:
            with Image.open(mask) as im:
                check_pixels(im.width, im.height, None, display_name(mask))
                mask = np.asarray(im.convert("L")) > 127
        except (OSError, SyntaxError, ValueError) as err:
            if isinstance(err, InputError):
                raise
            raise InputError(f"cannot read the mask {display_name(mask)} of {image_id}: "
                             f"{' '.join(str(err).split())}; give a PNG with the region in "
                             f"white") from None
    t = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    if t.dim() == 3 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 2:
        raise InputError(f"the mask of {image_id} must be 2-D [H, W], got {tuple(t.shape)}")
    t = t > 0 if t.dtype != torch.bool else t
    if tuple(t.shape) != tuple(size):
        t = F.interpolate(t[None, None].float(), size=size, mode="nearest")[0, 0] > 0.5
    return t


def read_records(path: Path) -> list[dict[str, Any]]:
    """Complete records of a ``results.jsonl``; a torn last line is dropped (and cut off
    the file); duplicates of a (method, image, input hash) keep the first."""
    return Journal(path, KEY).load()


def write_csv(records: list[dict[str, Any]], path: Path) -> None:
    """All records as one CSV (columns in order of first appearance), written atomically."""
    cols: list[str] = []
    for r in records:
        cols += [k for k in r if k not in cols]
    with atomic_open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols)
        writer.writeheader()
        writer.writerows(records)


def _clean(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def method_info(algo: registry.Method, native_px: float) -> dict[str, Any]:
    needs = algo.needs
    access = M.model_access(needs)
    return {
        "native_px_per_cell": native_px,
        "config_items": int(needs.layer) + 2 * int(needs.rules) + 3 * int(needs.training),
        "access": access,
        "access_rank": ACCESS_LEVELS.index(access),
    }


def batch_records(clf: Classifier, algo: registry.Method, x: torch.Tensor,
                  masks: list[torch.Tensor | None], ids: list[str],
                  opts: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-image metrics of one method on one batch, and the method's constant figures.

    Every score sits next to what a map that knows nothing would get on the same image
    (``pointing_chance``, ``centre_hit``, ``mask_share``, ``random_deletion_auc``,
    ``random_insertion_auc``); a flat map gets NaN where its score would be arbitrary
    (``flat_map`` says so).
    """
    expl = algo.explain(clf, x, Targets(None, 1))
    maps = expl.maps[:, 0].double()
    classes = expl.targets[:, 0]
    n, h, w = maps.shape
    cost = M.cost_per_image(expl)
    explain = M.method_explainer(algo.name, **algo.params)
    seeds = [zlib.crc32(i.encode()) ^ opts["seed"] for i in ids]  # per image: batch-free
    rec: dict[str, torch.Tensor] = {
        "sparseness": M.sparseness(maps), "complexity": M.complexity(maps),
        "flat_map": flat(maps).double(),
    }
    rec["normalised_entropy"] = rec["complexity"] / math.log(h * w)
    have = torch.tensor([m is not None for m in masks])
    if have.any():
        mk = torch.stack([m if m is not None else torch.zeros(h, w, dtype=torch.bool)
                          for m in masks]).to(maps.device)
        tol = opts["tolerance"]
        loc = {"pointing_game": M.pointing_game(maps, mk, tol),
               "energy_pointing_game": M.energy_pointing_game(maps, mk),
               "relevance_mass": M.relevance_mass_accuracy(maps, mk),
               "relevance_rank": M.relevance_rank_accuracy(maps, mk), "iou": M.iou(maps, mk),
               "pointing_chance": M.pointing_chance(mk, tol),
               "centre_hit": M.centre_hit(mk, tol), "mask_share": M.mask_share(mk)}
        rec.update({k: v.masked_fill(~have.to(v.device), float("nan")) for k, v in loc.items()})
    with clf.patched(), torch.no_grad():
        rec["deletion_auc"] = M.deletion_auc(clf, x, maps, opts["steps"], classes=classes,
                                             seed=seeds)
        rec["insertion_auc"] = M.insertion_auc(clf, x, maps, opts["steps"], classes=classes,
                                               seed=seeds)
        rec["random_deletion_auc"], rec["random_insertion_auc"] = _random_order(
            clf, x, classes, ids, seeds, opts)
    # the clean maps are reused wherever a metric needs them (sensitivity's base, the
    # top-1 maps of class discrimination and input dependence, the trained model's maps
    # of the sanity check): each metric only explains what is new to it
    known = (classes, expl.maps[:, 0])
    if opts["sensitivity_samples"]:
        sens = M.sensitivity(explain, clf, x, classes, n_samples=opts["sensitivity_samples"],
                             seed=seeds, base=known[1])
        rec["max_sensitivity"], rec["avg_sensitivity"] = sens.max, sens.avg
    with clf.patched(), torch.no_grad():  # eval mode, no gradients: a train-mode model
        n_classes = clf(x[:1]).shape[1]  # keeps its BatchNorm statistics and the like
    if n_classes > 1:
        sim = M.class_similarity(explain, clf, x, known=known)
        rec["class_spearman"], rec["class_ssim"] = sim.spearman, sim.ssim
    if opts["sanity_layers"] and not algo.needs.training:
        # a trained add-on (MACE) only explains the exact weights it was trained on: the
        # randomised model would need a new unit, so its sanity check stays n/a; the
        # score is the last step's (the top sanity_layers layers randomised), so only
        # that step is explained
        order = M.randomization.execution_order(clf, x)[-opts["sanity_layers"]:]
        rnd = M.cascading_randomization(explain, clf, x, classes, order, opts["seed"],
                                        reference=known[1], final_only=True)
        rec["randomized_spearman"] = rnd.spearman_abs[-1]
    if opts["sanity_layers"] and n > 1:  # the data side: maps of other images, same class
        dep = M.input_dependence(explain, clf, x, known=known)
        rec["input_spearman"], rec["input_identical"] = dep.spearman, dep.identical
    per_channel = expl.raw is not None and expl.raw.shape[2] > 1
    if per_channel:
        mass = expl.raw[:, 0].abs().flatten(2).sum(dim=2).double()  # [N, C]
        rec["colour_share"] = mass.max(dim=1).values / mass.sum(dim=1).clamp_min(1e-30)
    out = []
    for i in range(n):
        r = {"method": algo.name, "image": ids[i], "class": int(classes[i]),
             "ms_per_image": cost["ms"], "forward": cost["forward"],
             "backward": cost["backward"]}
        r.update({k: _clean(v[i]) for k, v in rec.items()})
        out.append(r)
    info = method_info(algo, M.native_resolution(expl))
    info["per_channel"] = float(per_channel)
    info["pointing_tolerance_px"] = float(opts["tolerance"])
    return out, info


def _random_order(clf: Classifier, x: torch.Tensor, classes: torch.Tensor, ids: list[str],
                  seeds: list[int], opts: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Deletion/insertion AUC of a random pixel order per image, computed once per image
    and run (``opts["random_order"]`` caches it across methods: same image, same class,
    same seed give the same numbers)."""
    cache: dict[tuple[str, int], tuple[float, float]] = opts.setdefault("random_order", {})
    todo = [i for i, (k, c) in enumerate(zip(ids, classes.tolist(), strict=True))
            if (k, c) not in cache]
    if todo:
        idx = torch.tensor(todo)
        dels, ins = M.random_order_aucs(clf, x[idx], opts["steps"], classes=classes[idx],
                                        seed=[seeds[i] for i in todo])
        for j, i in enumerate(todo):
            cache[(ids[i], int(classes[i]))] = (float(dels[j]), float(ins[j]))
    got = [cache[(k, int(c))] for k, c in zip(ids, classes, strict=True)]
    return (torch.tensor([g[0] for g in got], dtype=torch.float64),
            torch.tensor([g[1] for g in got], dtype=torch.float64))


def colour_figures(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The colour-shortcut benchmark of one method, or why it could not run there."""
    from .demo import colour

    try:
        return colour.benchmark(name, dict(params))
    except MindlensError as err:
        return {"colour_auroc": f"not measured: {err}"}


def chance_levels(masks: list[torch.Tensor], tolerance: float) -> dict[str, float]:
    """What a map that knows nothing scores on these masks, means over the images with a
    non-empty mask (empty when there are none): ``pointing_game`` of a point drawn
    uniformly (the share of pixels within ``tolerance`` of the mask), ``centre_point``
    (the pointing game of a map peaking at the centre) and ``relevance_mass`` of a uniform
    map (the mask's share of the image)."""
    masks = [m for m in masks if m.any()]
    if not masks:
        return {}
    mk = torch.stack(masks)
    return {"pointing_game": float(M.pointing_chance(mk, tolerance).mean()),
            "centre_point": float(M.centre_hit(mk, tolerance).mean()),
            "relevance_mass": float(M.mask_share(mk).mean()),
            "images": len(masks), "tolerance_px": float(tolerance)}


@dataclass
class Estimate:
    """What one method will cost in this evaluation, measured on one image before the run:
    ``seconds_per_image`` (the method's calls and the metrics' forwards), ``images`` it
    will run on (fewer than asked when a budget subsamples), and ``skipped`` with the reason
    when not even two images fit the budget."""

    method: str
    seconds_per_image: float
    images: int
    total: int
    skipped: str = ""

    @property
    def seconds(self) -> float:
        return self.seconds_per_image * self.images


#: inputs with a side of at most this many pixels are "small" for the evaluation (CIFAR,
#: MNIST): there occlusion runs its "exact" mode (a 4-px window's projective field covers
#: most of a 32-px network after a few layers, so the incremental engine saves little and
#: its check windows cost extra: 0.77 s exact against 1.04 s auto for 8 CIFAR images with
#: 8 x 8 tiles on ResNet-20, quiet machine, 2 threads)
SMALL_SIDE = 64
#: Monte-Carlo sizes of the sampling methods in an evaluation, where each image is
#: explained about nine times (their own defaults: 50 steps / 50 samples / 6,000 masks)
EVALUATION_SAMPLES = {"integrated_gradients": ("n_steps", 16), "smoothgrad": ("n", 16),
                      "rise": ("n_masks", 250)}


def evaluation_params(clf: Classifier, name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a method runs with in an evaluation: the user's (always kept), plus
    what keeps the metrics' re-runs affordable, recorded in the run's manifest and in
    ``criteria.json``:

    - occlusion: a window of about 1/8 of the image side, tiled (stride = window: 8 x 8
      positions, 9 x 9 where the side is not a multiple of the window) instead of the
      pixel-level default, which on a 32-px input means 961 forward passes per image and
      per metric re-run;
    - area occlusion on small inputs: SLIC with 64 regions (about the occlusion tiles)
      instead of scikit-image's 100 (122 on a 32-px image);
    - fewer Monte-Carlo samples for the sampling methods (:data:`EVALUATION_SAMPLES`:
      Integrated Gradients' Gauss-Legendre rule with 16 nodes, SmoothGrad with 16 noisy
      copies, RISE with 250 masks: its 8 x 8 cells are each kept in about 25 of them);
    - on small inputs (:data:`SMALL_SIDE`) occlusion in its exact mode.
    """
    out = dict(given)
    side = min(clf.input_size)
    small = side <= SMALL_SIDE
    if name == "occlusion" and out.get("window") is None:
        out["window"] = max(2, round(side / 8))
        out.setdefault("stride", out["window"])
    if name == "occlusion" and small:
        out.setdefault("mode", "exact")
    if (name == "area_occlusion" and small and out.get("regions", "slic") == "slic"
            and out.get("segmenter_options") is None):
        out["segmenter_options"] = {"n_segments": 64}
    if name in EVALUATION_SAMPLES:
        key, value = EVALUATION_SAMPLES[name]
        out.setdefault(key, value)
    return out


def metric_calls(opts: Mapping[str, Any], n_classes: int) -> int:
    """How many times the metrics explain each image, the first explanation included: the
    clean map (reused by every metric that needs it), one per noise sample, the runner-up
    class, the randomised model, and at most one for input dependence (images already
    explained for the batch's common class are not explained again)."""
    return (1 + opts["sensitivity_samples"] + (1 if n_classes > 1 else 0)
            + (2 if opts["sanity_layers"] else 0))


def time_one(clf: Classifier, algo: registry.Method, first: torch.Tensor, steps: int,
             copies: int = 4) -> tuple[float, float, int]:
    """Seconds per image for explaining ``copies`` copies of ``first`` in one call (after a
    warm-up on ``first``, so later timings are steady; a batch, as the evaluation sends
    them: one image alone costs more per image), seconds for one deletion curve of it
    (one forward pass of ``steps + 1`` copies, as :func:`mindlens.metrics.deletion`
    sends them), and the number of outputs."""
    algo.explain(clf, first, Targets(None, 1))  # warm-up
    batch = first.expand(copies, *first.shape[1:]).contiguous()
    t0 = time.perf_counter()
    algo.explain(clf, batch, Targets(None, 1))
    t_explain = (time.perf_counter() - t0) / copies
    with clf.patched(), torch.no_grad():
        curve = first.expand(steps + 1, *first.shape[1:])
        t0 = time.perf_counter()
        logits = clf(curve)
        t_curve = time.perf_counter() - t0
    return t_explain, t_curve, int(logits.shape[1])


def fit_budget(per_image: float, total: int, budget: float | None) -> tuple[int, str]:
    """How many of ``total`` images fit ``budget`` seconds, and why a method is left out
    when not even two do (``""`` otherwise)."""
    if budget is None or per_image * total <= budget:
        return total, ""
    fit = int(budget // per_image)
    if fit >= 2:
        return fit, ""
    return 0, (f"skipped: about {_duration(per_image * total)} for {total} image(s), more "
               f"than the budget of {_duration(budget)} (not even 2 images fit)")


def estimate(clf: Classifier, algo: registry.Method, first: torch.Tensor, total: int,
             opts: Mapping[str, Any], budget: float | None, copies: int = 4,
             random_order: bool = False) -> Estimate:
    """Time one image (:func:`time_one`, in a batch of ``copies``), scale it by the
    metrics' calls and curves to ``total`` images and fit them to ``budget`` seconds.
    ``random_order``: this method also pays the random-order curves (the first method of
    a run: they are computed once per image and run)."""
    t_explain, t_curve, n_classes = time_one(clf, algo, first, opts["steps"], copies)
    # deletion + insertion of the map (+ of a random order, once per image and run)
    per_image = t_explain * metric_calls(opts, n_classes) + (4 if random_order else 2) * t_curve
    images, skipped = fit_budget(per_image, total, budget)
    return Estimate(algo.name, per_image, images, total, skipped)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def subsample(items: list[int], k: int) -> list[int]:
    """``k`` of ``items`` spread evenly over them (deterministic: a resumed run picks the
    same ones)."""
    if k >= len(items):
        return items
    if k <= 0:
        return []
    step = len(items) / k
    return [items[int(i * step)] for i in range(k)]


def run_manifest(clf: Classifier, hashes: list[str], masks: Sequence[MaskLike] | None,
                 ids: list[str], names: list[str], settings: dict[str, Any]
                 ) -> dict[str, Any]:
    """The manifest of an evaluation (see :mod:`mindlens.runs.manifest`): the model, every
    image (``hashes``: their content hashes) and mask by content hash, each method with all
    its parameters, the settings."""
    data = []
    for i, digest in enumerate(hashes):
        entry = {"id": ids[i], "sha256": digest}
        if masks is not None:
            entry["mask_sha256"] = input_hash(masks[i])
        data.append(entry)
    given = settings.pop("params")
    methods = {name: describe({**registry.get(name).defaults, **dict(given.get(name, {}))})
               for name in names}
    return make_manifest("evaluate", model_fingerprint(clf), data,
                         {"methods": methods, **describe(settings)})


def evaluate(clf: Classifier, images: Sequence[ImageLike] | torch.Tensor,
             masks: Sequence[MaskLike] | None = None, methods: Sequence[str] | None = None,
             out_dir: str | Path | None = None, batch_size: int = 8, steps: int = 50,
             tolerance: float | None = None, sensitivity_samples: int = 5,
             sanity_layers: int = 3, seed: int = 0, progress: Progress | None = None,
             params: Mapping[str, Mapping[str, Any]] | None = None,
             colour_check: bool = False, overwrite: bool = False,
             budget: float | None = None,
             on_estimates: Callable[[list[Estimate]], None] | None = None) -> CriteriaTable:
    """Evaluate ``methods`` (default: all registered) on ``images`` and return the criteria
    table; with ``out_dir`` every per-image record is saved at once and a rerun of the same
    evaluation resumes (another one is refused, unless ``overwrite``: see the module
    docstring).

    ``masks``: one per image (``None`` where an image has no ground truth) as arrays,
    tensors or image files; resized to the input size with nearest neighbour. Methods that
    cannot run on this model appear as "not applicable" with the reason.
    ``tolerance``: the pointing game's, in pixels (default: 15 px at 224, proportionally
    less for smaller inputs, :func:`mindlens.metrics.default_tolerance`).
    ``progress(method, done, total)`` is called after each batch. ``params``: settings per
    method name (e.g. ``{"mace": {"unit": path}}``). ``colour_check``: also measure the
    colour-shortcut AUROC (see the module docstring). Before the run every method is timed
    on one image and ``on_estimates`` gets the estimates; ``budget`` (seconds per method)
    subsamples a method that would take longer, evenly over the images, or leaves it out
    when not even two images fit.
    """
    names = list(registry.names() if methods is None else methods)
    classes = {name: registry.get(name) for name in names}  # unknown names: InputError
    n = len(images)
    if n == 0:
        raise InputError("no images to evaluate")
    if masks is not None and len(masks) != n:
        raise InputError(f"{len(masks)} masks for {n} images: give one per image, None "
                         f"where an image has no mask")
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    if budget is not None and budget <= 0:
        raise InputError(f"budget must be a positive number of seconds, got {budget}")
    tolerance = M.default_tolerance(clf.input_size) if tolerance is None else tolerance
    ids = image_ids(images)
    mask_t = [load_mask(m, clf.input_size, ids[i]) for i, m in
              enumerate(masks if masks is not None else [None] * n)]
    opts = {"steps": steps, "tolerance": tolerance, "sensitivity_samples": sensitivity_samples,
            "sanity_layers": sanity_layers, "seed": seed}
    # what every method runs with here (the user's settings and the evaluation's, recorded
    # in the manifest and in criteria.json)
    used = {name: evaluation_params(clf, name, (params or {}).get(name, {})) for name in names}
    out = Path(out_dir) if out_dir is not None else None
    hashes = [input_hash(im) for im in images]
    journal = Journal(None, KEY)
    if out is not None:
        manifest = run_manifest(clf, hashes, masks, ids, names, {
            **opts, "batch_size": batch_size, "colour_check": colour_check,
            "budget": budget, "params": used})
        journal = open_run(out, manifest, RESULTS, KEY, OUTPUTS, overwrite).journal
    table = CriteriaTable(settings=describe({
        **opts, "batch_size": batch_size, "images": n,
        "methods": {name: {**registry.get(name).defaults, **used[name]} for name in names}}))
    first = clf.preprocess(images[:1] if isinstance(images, torch.Tensor) else [images[0]])
    plans: dict[str, tuple[registry.Method, list[int], Estimate] | str] = {}
    for name in names:
        try:
            algo = classes[name](**used[name])
            algo.check(clf)
            pays = not any(not isinstance(p, str) for p in plans.values())  # the first
            est = estimate(clf, algo, first, n, opts, budget, min(4, batch_size, n), pays)
            chosen = subsample(list(range(n)), est.images)  # the same set when resumed
            plans[name] = (algo, chosen, est)
        except MindlensError as err:
            plans[name] = str(err)
    if on_estimates is not None:
        on_estimates([p[2] for p in plans.values() if not isinstance(p, str)])
    for name in names:
        plan = plans[name]
        if isinstance(plan, str):
            table.rows.append({"method": name, "status": "not applicable", "reason": plan})
            continue
        algo, chosen, est = plan
        if est.skipped:
            table.rows.append({"method": name, "status": "not applicable",
                               "reason": est.skipped})
            continue
        info: dict[str, Any] | None = None
        try:
            # fixed batches: one cut off by a kill is computed whole again, so every image
            # is always explained in the same company (bit-identical numbers on resume);
            # the estimate above warmed the method up, so timings are steady
            for start in range(0, len(chosen), batch_size):
                idx = chosen[start:start + batch_size]
                if all((name, ids[i], hashes[i]) in journal for i in idx):
                    continue
                x = clf.preprocess([images[i] for i in idx] if not isinstance(
                    images, torch.Tensor) else images[idx])
                recs, info = batch_records(clf, algo, x, [mask_t[i] for i in idx],
                                           [ids[i] for i in idx], opts)
                rows = [{"method": r["method"], "image": r["image"], "input_hash": hashes[i],
                         **r} for i, r in zip(idx, recs, strict=True)]
                journal.append(rows)
                if progress is not None:
                    progress(name, start + len(idx), len(chosen))
            if info is None:  # everything was done before: constants from one image
                info = batch_records(clf, algo, first, [None], ids[:1], {**opts, "steps": 1,
                                     "sensitivity_samples": 0, "sanity_layers": 0})[1]
            if colour_check and info["per_channel"]:
                info.update(colour_figures(name, algo.params))
        except RunWriteError:
            raise  # the disk, not the method: stop, the rows written so far are kept
        except MindlensError as err:
            table.rows.append({"method": name, "status": "not applicable", "reason": str(err)})
            continue
        picked = {ids[i] for i in chosen}
        mine = [r for r in journal.rows if r["method"] == name and r["image"] in picked]
        info["subsampled"] = (f"{len(mine)} of {n} images (--budget)"
                              if len(mine) < n and budget is not None else "")
        table.rows.append(summarize(name, mine, info))
    table.baselines = chance_levels([m for m in mask_t if m is not None], tolerance)
    if out is not None:
        write_csv(journal.rows, out / "results.csv")
        write_atomic(out / "criteria.json", json.dumps(table.to_dict(), indent=1))
    return table
