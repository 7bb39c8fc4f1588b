"""Area occlusion (Rieke, Eitel, Weygandt, Haynes, Ritter 2018, "Visualizing Convolutional
Networks for MRI-based Diagnosis of Alzheimer's Disease", MLCN@MICCAI, arXiv:1808.02874):
occlude whole predefined regions instead of a sliding square, one forward pass per region.

Regions come from scikit-image superpixels (SLIC, Felzenszwalb, quickshift) computed on the
de-normalised image, from a user label map (array, tensor, image file or ``.npy``), or from
a 3-D label volume such as an anatomical atlas in NIfTI format (through nibabel), with
optional region names. Label 0 is ignored: it costs no pass and gets 0 in the map.
Every pixel of a region gets that region's score drop; ``extras["regions"]`` holds the
table per image (id, name, size, drop per target, drop per pixel).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import InputError
from ...explanation import Cost, Explanation
from ...model import Classifier
from ...targets import Targets, probabilities
from ..base import Method, Needs, register
from .scoring import (
    auto_batch_size,
    baseline_param,
    check_baseline,
    check_batch_size,
    check_image_or_volume,
    check_score,
    resolve_baseline,
    score_drops,
)

SEGMENTERS = ("slic", "felzenszwalb", "quickshift")
SEGMENTER_DEFAULTS: dict[str, dict[str, Any]] = {
    "slic": {"n_segments": 100, "compactness": 10.0, "sigma": 1.0},
    "felzenszwalb": {"scale": 100.0, "sigma": 0.5, "min_size": 50},
    "quickshift": {"kernel_size": 3, "max_dist": 6.0, "ratio": 0.5},
}
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def load_label_map(source: str | Path | np.ndarray | torch.Tensor) -> np.ndarray:
    """An integer label map from an array/tensor, a ``.npy`` file, a NIfTI file (3-D atlas)
    or an image file (grey levels or palette indices are the labels; in an RGB image each
    distinct colour is one region and black is 0)."""
    if isinstance(source, torch.Tensor):
        source = source.detach().cpu().numpy()
    if isinstance(source, np.ndarray):
        arr = source
    else:
        path = Path(source)
        if not path.exists():
            raise InputError(f"label map file not found: {path}")
        name = path.name.lower()
        if name.endswith(NIFTI_SUFFIXES):
            try:
                import nibabel
            except ImportError:
                raise InputError(
                    "reading NIfTI atlases needs nibabel: pip install 'mindlens[volumes]'"
                ) from None
            arr = np.asarray(nibabel.load(str(path)).dataobj)
        elif name.endswith(".npy"):
            arr = np.load(path, allow_pickle=False)
        else:
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(path) as img:
                    arr = _image_labels(img)
            except UnidentifiedImageError:
                raise InputError(
                    f"cannot read label map {path}: use an image (PNG, TIFF), .npy or NIfTI"
                ) from None
    arr = np.squeeze(np.asarray(arr))
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.allclose(arr, np.round(arr)):
            raise InputError("a label map must hold integer region ids (0 = ignore)")
        arr = np.round(arr)
    if arr.dtype.kind not in "iuf" and arr.dtype != np.bool_:
        raise InputError(f"a label map must hold integer region ids, got dtype {arr.dtype}")
    if (arr < 0).any():
        raise InputError("a label map must not hold negative ids (0 = ignore)")
    return arr.astype(np.int64)


def _image_labels(img: Any) -> np.ndarray:
    if img.mode in ("RGB", "RGBA"):
        rgb = np.asarray(img.convert("RGB")).reshape(-1, 3)
        colours, inverse = np.unique(rgb, axis=0, return_inverse=True)
        ids = np.arange(len(colours)) + (0 if (colours[0] == 0).all() else 1)
        return ids[inverse.reshape(-1)].reshape(img.height, img.width)
    return np.asarray(img)


def load_region_names(names: Any) -> dict[int, str]:
    """``{id: name}`` from a mapping, a list (index = id) or a text file of ``id name``
    lines (e.g. an atlas' label list)."""
    if names is None:
        return {}
    if isinstance(names, Mapping):
        return {int(k): str(v) for k, v in names.items()}
    if isinstance(names, (str, Path)):
        path = Path(names)
        if not path.exists():
            raise InputError(f"region names file not found: {path}")
        out: dict[int, str] = {}
        for n, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split(maxsplit=1)
            if not parts or line.lstrip().startswith("#"):
                continue
            try:
                out[int(parts[0])] = parts[1].strip() if len(parts) > 1 else parts[0]
            except ValueError:
                raise InputError(
                    f"{path}, line {n}: expected 'id name', got {line!r}") from None
        return out
    return {i: str(v) for i, v in enumerate(names)}


def segment(pixels: np.ndarray, how: str, options: Mapping[str, Any]) -> np.ndarray:
    """Superpixels of one de-normalised image ``[*spatial, C]`` in [0, 1], ids from 1."""
    from skimage import segmentation

    kw = {**SEGMENTER_DEFAULTS[how], **options}
    gray = pixels.shape[-1] == 1
    img = pixels[..., 0] if gray else pixels
    channel_axis = None if gray else -1
    if how == "slic":
        labels = segmentation.slic(img, start_label=1, channel_axis=channel_axis, **kw)
    elif how == "felzenszwalb":
        if img.ndim - (0 if gray else 1) != 2:
            raise InputError("felzenszwalb superpixels are 2-D only; use slic for volumes")
        labels = segmentation.felzenszwalb(img, channel_axis=channel_axis, **kw) + 1
    else:
        if gray:
            img = np.repeat(pixels, 3, axis=-1)
            kw.setdefault("convert2lab", False)
        labels = segmentation.quickshift(img, channel_axis=-1, **kw) + 1
    return np.asarray(labels, dtype=np.int64)


@register
class AreaOcclusion(Method):
    """Area occlusion (Rieke et al. 2018).

    Parameters: ``regions`` (``"slic"``, ``"felzenszwalb"``, ``"quickshift"``, or a label
    map: array/tensor ``[*spatial]`` or ``[B, *spatial]``, image file, ``.npy`` or NIfTI
    atlas), ``region_names`` (``{id: name}``, list, or text file of ``id name`` lines),
    ``segmenter_options`` (keywords for the scikit-image segmenter), ``baseline``,
    ``score``, ``positive_only``, ``batch_size``, ``blur_sigma`` as for occlusion.

    Cost: ``R + 1`` model evaluations per image, ``R`` = number of regions (label 0 free).
    """

    name = "area_occlusion"
    title = "Area occlusion"
    needs = Needs()
    meaning = ("Each region is coloured by how much covering it up lowered the class "
               "score; blue regions raised it.")
    reference = "Rieke et al. 2018, MLCN@MICCAI, arXiv:1808.02874"
    defaults = {"regions": "slic", "region_names": None, "segmenter_options": None,
                "baseline": "zero", "score": "prob", "positive_only": False,
                "batch_size": None, "blur_sigma": 2.0}

    @property
    def signed(self) -> bool:
        return not self.params["positive_only"]

    def validate(self) -> None:
        p = self.params
        if isinstance(p["regions"], str) and not Path(p["regions"]).suffix \
                and p["regions"] not in SEGMENTERS:
            raise InputError(
                f"regions must be one of {', '.join(SEGMENTERS)}, a label map array or a "
                f"label map file; got {p['regions']!r}"
            )
        check_baseline(p["baseline"])
        check_score(p["score"])
        check_batch_size(p["batch_size"])
        opts = p["segmenter_options"]
        if opts is not None and not isinstance(opts, Mapping):
            raise InputError("segmenter_options must be a dict of keyword arguments")

    def labels(self, clf: Classifier, x: torch.Tensor) -> torch.Tensor:
        """Integer label maps ``[B, *spatial]`` for the batch."""
        regions = self.params["regions"]
        spatial = tuple(x.shape[2:])
        if isinstance(regions, str) and regions in SEGMENTERS:
            pixels = clf.spec.denormalize(x.detach().double().cpu()).clamp(0, 1)
            pixels = pixels.movedim(1, -1).numpy()
            opts = self.params["segmenter_options"] or {}
            maps = [segment(px, regions, opts) for px in pixels]
            return torch.from_numpy(np.stack(maps)).to(x.device)
        arr = load_label_map(regions)
        nifti = isinstance(regions, (str, Path)) and str(regions).lower().endswith(
            NIFTI_SUFFIXES)
        kind = "atlas" if nifti or len(spatial) == 3 else "label map"
        if arr.shape == spatial:
            arr = np.broadcast_to(arr, (x.shape[0], *spatial))
        elif arr.shape != (x.shape[0], *spatial):
            raise InputError(
                f"the {kind} has shape {arr.shape} but the "
                f"{'volume' if len(spatial) == 3 else 'image'} is {spatial} (model input "
                f"{tuple(x.shape)}); the regions must match the input voxel for voxel: "
                f"resample or register the {kind} to the model's input grid first"
            )
        return torch.from_numpy(np.array(arr, dtype=np.int64)).to(x.device)

    def run(self, clf: Classifier, x: torch.Tensor, targets: Targets) -> Explanation:
        check_image_or_volume(x, "area occlusion")
        p = self.params
        x = x.detach()
        labels = self.labels(clf, x)
        names = load_region_names(p["region_names"])
        ids = [torch.unique(lab) for lab in labels]
        ids = [i[i != 0] for i in ids]
        sigma = p["blur_sigma"]
        sigma = (float(sigma),) * (x.dim() - 2) if isinstance(sigma, (int, float)) else sigma
        base = resolve_baseline(p["baseline"], clf, x, sigma)

        def fill(batch: torch.Tensor, image: int, items: Sequence[int]) -> None:
            for row, item in enumerate(items):
                mask = (labels[image] == ids[image][item])[None]
                batch[row] = torch.where(mask, base[image], batch[row])

        d = score_drops(clf, x, targets, p["score"], [len(i) for i in ids], fill,
                        auto_batch_size(p["batch_size"], x))
        drops = d.drops.clamp_min(0) if p["positive_only"] else d.drops
        maps = torch.zeros(*drops.shape[:2], *x.shape[2:], dtype=drops.dtype,
                           device=drops.device)
        tables = []
        for b, region_ids in enumerate(ids):
            if len(region_ids):
                lut = torch.full((int(labels[b].max()) + 1,), -1, dtype=torch.long,
                                 device=labels.device)
                lut[region_ids] = torch.arange(len(region_ids), device=labels.device)
                idx = lut[labels[b]]
                values = drops[b][:, idx.clamp_min(0)]
                maps[b] = torch.where(idx >= 0, values, torch.zeros_like(values))
            sizes = [int((labels[b] == r).sum()) for r in region_ids]
            tables.append([
                {"id": int(r), "name": names.get(int(r), f"region {int(r)}"), "size": size,
                 "drop": drops[b, :, j].tolist(),
                 "drop_per_pixel": (drops[b, :, j] / size).tolist()}
                for j, (r, size) in enumerate(zip(region_ids.tolist(), sizes, strict=True))
            ])
        params = dict(p, baseline=baseline_param(p["baseline"]))
        if not isinstance(p["regions"], (str, Path)):
            params["regions"] = "label map"
        return Explanation(
            logits=d.logits.detach(),
            method=self.name, maps=maps, targets=d.classes, scores=d.clean,
            probs=probabilities(d.logits, d.classes), signed=self.signed, params=params,
            native_shape=(max((len(i) for i in ids), default=0),),
            cost=Cost(forward=d.forwards),
            extras={"regions": tables, "labels": labels.cpu(), "forward_calls": d.calls},
        )
