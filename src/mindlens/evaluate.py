"""Methods x metrics over a dataset, saved as it goes, summarised as the criteria table.

``evaluate(clf, images, masks, methods, out_dir)`` explains every image with every method
(its top-1 class), computes the per-image metrics of :mod:`mindlens.metrics` and appends
one record per (method, image) to ``results.jsonl`` and ``results.csv`` right away. A run
that is killed and started again with the same ``out_dir`` skips every (method, image)
already recorded, so no image is counted twice; the JSON lines are the source of truth
(a line cut off by the kill is dropped and recomputed) and the CSV is rewritten from them.
At the end ``criteria.json`` holds the table (see :mod:`mindlens.metrics.criteria`).

With ``colour_check=True`` every method that gives per-channel relevance is also run on the
colour-shortcut benchmark of :mod:`mindlens.demo.colour` (the bundled colour-cue model and
its control, independent of the evaluated model), which grades the "colour bias" criterion.
"""

from __future__ import annotations

import csv
import json
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import methods as registry
from . import metrics as M
from .errors import InputError, MindlensError
from .io import check_pixels, display_name, readable
from .metrics.cost import ACCESS_LEVELS
from .metrics.criteria import CriteriaTable, summarize
from .model import Classifier, ImageLike
from .targets import Targets

MaskLike = np.ndarray | torch.Tensor | str | Path | None
Progress = Callable[[str, int, int], None]
RESULTS = "results.jsonl"


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
    """Complete records of ``results.jsonl``; a torn last line is dropped; duplicates of a
    (method, image) pair keep the first."""
    if not path.exists():
        return []
    seen: set[tuple[str, str]] = set()
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        key = (rec.get("method"), rec.get("image"))
        if key not in seen:
            seen.add(key)
            out.append(rec)
    return out


def write_csv(records: list[dict[str, Any]], path: Path) -> None:
    cols: list[str] = []
    for r in records:
        cols += [k for k in r if k not in cols]
    with path.open("w", newline="") as f:
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
    """Per-image metrics of one method on one batch, and the method's constant figures."""
    expl = algo.explain(clf, x, Targets(None, 1))
    maps = expl.maps[:, 0].double()
    classes = expl.targets[:, 0]
    n, h, w = maps.shape
    cost = M.cost_per_image(expl)
    explain = M.method_explainer(algo.name, **algo.params)
    seeds = [zlib.crc32(i.encode()) ^ opts["seed"] for i in ids]  # per image: batch-free
    rec: dict[str, torch.Tensor] = {
        "sparseness": M.sparseness(maps), "complexity": M.complexity(maps),
    }
    rec["normalised_entropy"] = rec["complexity"] / math.log(h * w)
    have = torch.tensor([m is not None for m in masks])
    if have.any():
        mk = torch.stack([m if m is not None else torch.zeros(h, w, dtype=torch.bool)
                          for m in masks]).to(maps.device)
        loc = {"pointing_game": M.pointing_game(maps, mk, opts["tolerance"]),
               "energy_pointing_game": M.energy_pointing_game(maps, mk),
               "relevance_mass": M.relevance_mass_accuracy(maps, mk),
               "relevance_rank": M.relevance_rank_accuracy(maps, mk), "iou": M.iou(maps, mk)}
        rec.update({k: v.masked_fill(~have.to(v.device), float("nan")) for k, v in loc.items()})
    with clf.patched(), torch.no_grad():
        rec["deletion_auc"] = M.deletion_auc(clf, x, maps, opts["steps"], classes=classes,
                                             seed=seeds)
        rec["insertion_auc"] = M.insertion_auc(clf, x, maps, opts["steps"], classes=classes,
                                               seed=seeds)
    if opts["sensitivity_samples"]:
        sens = M.sensitivity(explain, clf, x, classes, n_samples=opts["sensitivity_samples"],
                             seed=seeds)
        rec["max_sensitivity"], rec["avg_sensitivity"] = sens.max, sens.avg
    if clf(x[:1]).shape[1] > 1:
        sim = M.class_similarity(explain, clf, x)
        rec["class_spearman"], rec["class_ssim"] = sim.spearman, sim.ssim
    if opts["sanity_layers"] and not algo.needs.training:
        # a trained add-on (MACE) only explains the exact weights it was trained on: the
        # randomised model would need a new unit, so its sanity check stays n/a
        order = M.randomization.execution_order(clf, x)[-opts["sanity_layers"]:]
        rnd = M.cascading_randomization(explain, clf, x, classes, order, opts["seed"])
        rec["randomized_spearman"] = rnd.spearman_abs[-1]
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


def colour_figures(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The colour-shortcut benchmark of one method, or why it could not run there."""
    from .demo import colour

    try:
        return colour.benchmark(name, dict(params))
    except MindlensError as err:
        return {"colour_auroc": f"not measured: {err}"}


def chance_levels(masks: list[torch.Tensor], tolerance: float) -> dict[str, float]:
    """What a map that knows nothing scores on these masks: ``pointing_game`` of a point
    drawn uniformly (the share of pixels within ``tolerance`` of the mask) and
    ``relevance_mass`` of a uniform map (the mask's share of the image), means over the
    images with a non-empty mask; empty when there are none."""
    masks = [m for m in masks if m.any()]
    if not masks:
        return {}
    mk = torch.stack(masks).float()[:, None]
    r = math.ceil(tolerance)
    if r > 0:
        off = torch.arange(-r, r + 1, dtype=torch.float32)
        disc = ((off[:, None] ** 2 + off[None, :] ** 2) < tolerance ** 2).float()[None, None]
        near = F.conv2d(mk, disc, padding=r)[:, 0] > 0
    else:
        near = mk[:, 0] > 0
    return {"pointing_game": float(near.flatten(1).double().mean(1).mean()),
            "relevance_mass": float(mk.flatten(1).double().mean(1).mean()),
            "images": len(masks)}


def evaluate(clf: Classifier, images: Sequence[ImageLike] | torch.Tensor,
             masks: Sequence[MaskLike] | None = None, methods: Sequence[str] | None = None,
             out_dir: str | Path | None = None, batch_size: int = 8, steps: int = 50,
             tolerance: float = 15, sensitivity_samples: int = 5, sanity_layers: int = 3,
             seed: int = 0, progress: Progress | None = None,
             params: Mapping[str, Mapping[str, Any]] | None = None,
             colour_check: bool = False) -> CriteriaTable:
    """Evaluate ``methods`` (default: all registered) on ``images`` and return the criteria
    table; with ``out_dir`` every per-image record is saved at once and a rerun resumes.

    ``masks``: one per image (``None`` where an image has no ground truth) as arrays,
    tensors or image files; resized to the input size with nearest neighbour. Methods that
    cannot run on this model appear as "not applicable" with the reason.
    ``progress(method, done, total)`` is called after each batch. ``params``: settings per
    method name (e.g. ``{"mace": {"unit": path}}``). ``colour_check``: also measure the
    colour-shortcut AUROC (see the module docstring).
    """
    names = list(registry.names() if methods is None else methods)
    classes = {name: registry.get(name) for name in names}  # unknown names: InputError
    n = len(images)
    if n == 0:
        raise InputError("no images to evaluate")
    if masks is not None and len(masks) != n:
        raise InputError(f"{len(masks)} masks for {n} images: give one per image, None "
                         f"where an image has no mask")
    ids = image_ids(images)
    mask_t = [load_mask(m, clf.input_size, ids[i]) for i, m in
              enumerate(masks if masks is not None else [None] * n)]
    out = Path(out_dir) if out_dir is not None else None
    records = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        records = read_records(out / RESULTS)
        (out / RESULTS).write_text("".join(json.dumps(r) + "\n" for r in records))
    done = {(r["method"], r["image"]) for r in records}
    opts = {"steps": steps, "tolerance": tolerance, "sensitivity_samples": sensitivity_samples,
            "sanity_layers": sanity_layers, "seed": seed}
    table = CriteriaTable()
    for name in names:
        try:
            algo = classes[name](**dict((params or {}).get(name, {})))
            algo.check(clf)
        except MindlensError as err:
            table.rows.append({"method": name, "status": "not applicable", "reason": str(err)})
            continue
        todo = [i for i in range(n) if (name, ids[i]) not in done]
        info: dict[str, Any] | None = None
        try:
            first = clf.preprocess(images[:1] if isinstance(images, torch.Tensor)
                                   else [images[0]])
            algo.explain(clf, first, Targets(None, 1))  # warm-up, so timings are steady
            for start in range(0, len(todo), batch_size):
                idx = todo[start:start + batch_size]
                x = clf.preprocess([images[i] for i in idx] if not isinstance(
                    images, torch.Tensor) else images[idx])
                recs, info = batch_records(clf, algo, x, [mask_t[i] for i in idx],
                                           [ids[i] for i in idx], opts)
                records += recs
                if out is not None:
                    with (out / RESULTS).open("a") as f:
                        f.writelines(json.dumps(r) + "\n" for r in recs)
                if progress is not None:
                    progress(name, n - len(todo) + start + len(idx), n)
            if info is None:  # everything was done before: constants from one image
                info = batch_records(clf, algo, first, [None], ids[:1], {**opts, "steps": 1,
                                     "sensitivity_samples": 0, "sanity_layers": 0})[1]
            if colour_check and info["per_channel"]:
                info.update(colour_figures(name, algo.params))
        except MindlensError as err:
            table.rows.append({"method": name, "status": "not applicable", "reason": str(err)})
            continue
        mine = [r for r in records if r["method"] == name and r["image"] in set(ids)]
        table.rows.append(summarize(name, mine, info))
    table.baselines = chance_levels([m for m in mask_t if m is not None], tolerance)
    if out is not None:
        write_csv(records, out / "results.csv")
        (out / "criteria.json").write_text(json.dumps(table.to_dict(), indent=1))
    return table
