"""Training images for a MACE unit, and the frozen model's features cached once.

Resize policy: every image is resized to the classifier's input size by
:meth:`Classifier.preprocess` (bilinear, antialiased), exactly as for any explanation.
A model-space tensor is taken as it is; its size must be the model's input size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...errors import InputError
from ...io import IMAGE_SUFFIXES
from ...model import Classifier, ImageLike
from .attach import Attachment, FeatureCapture

ImagesLike = str | Path | Sequence[ImageLike] | np.ndarray | torch.Tensor


class ImageSet:
    """A fixed, ordered set of images: files, arrays or a model-space tensor."""

    def __init__(self, images: ImagesLike, clf: Classifier) -> None:
        self.clf = clf
        self.tensor: torch.Tensor | None = None
        self.items: list[ImageLike] = []
        if isinstance(images, (str, Path)):
            root = Path(images)
            if not root.is_dir():
                raise InputError(f"training data folder not found: {root}")
            self.items = sorted(p for p in root.rglob("*")
                                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.items:
                raise InputError(
                    f"no images found in {root} (looked for {', '.join(IMAGE_SUFFIXES)} files, "
                    f"also in subfolders); MACE trains on unlabeled images of the model's "
                    f"classes, a few hundred or more")
        elif isinstance(images, torch.Tensor):
            self.tensor = clf.check_tensor(images)
            if tuple(self.tensor.shape[2:]) != clf.input_size:
                raise InputError(
                    f"the model-space tensor is {tuple(self.tensor.shape[2:])} but the model "
                    f"takes {clf.input_size}; pass files or arrays to have them resized")
        elif isinstance(images, np.ndarray) and images.ndim == 4:
            self.items = list(images)
        else:
            self.items = list(images)  # type: ignore[arg-type]
        if len(self) == 0:
            raise InputError("no training images were given")

    def __len__(self) -> int:
        return int(self.tensor.shape[0]) if self.tensor is not None else len(self.items)

    def batch(self, index: Sequence[int]) -> torch.Tensor:
        """Model-space batch of the images at ``index``."""
        if self.tensor is not None:
            return self.tensor[list(index)]
        return self.clf.preprocess([self.items[i] for i in index])

    def name(self, i: int) -> str:
        item = self.items[i] if self.tensor is None else None
        return str(item) if isinstance(item, (str, Path)) else f"image {i}"


@dataclass
class FeatureCache:
    """``F [N, D, H, W]``, head representation ``z [N, n]`` and base probabilities ``p``."""

    F: torch.Tensor
    z: torch.Tensor
    p: torch.Tensor


@torch.no_grad()
def cache_features(clf: Classifier, images: ImageSet, att: Attachment, chunk: int = 64
                   ) -> FeatureCache:
    """One forward pass of the frozen model over all images."""
    cap = FeatureCapture(clf, att.layer)
    fs, zs, ps = [], [], []
    for start in range(0, len(images), chunk):
        x = images.batch(range(start, min(start + chunk, len(images))))
        f, logits = cap.run(x, watch=[att.head] if att.head else [])
        fs.append(f.float().cpu())
        if att.head is None:
            zs.append(logits.float().cpu())
        else:
            zs.append(cap.linear_inputs[-1][1].float().cpu())
        ps.append(logits.float().softmax(dim=1).cpu())
    return FeatureCache(torch.cat(fs), torch.cat(zs), torch.cat(ps))
