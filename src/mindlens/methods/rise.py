"""RISE: Randomized Input Sampling for Explanation (spec methods-more.md §18).

Random soft masks ``M_n`` (a coarse binary grid, bilinearly upsampled, randomly shifted)
are applied to the image; the saliency of class ``c`` at pixel ``i`` is
``S_c(i) = sum_n f_c(x * M_n) M_n(i) / (N p1)``: the expected score when pixel ``i`` is
kept. Only the ``N x s x s`` binary grids and the ``N x 2`` shifts are stored; each chunk
of masks is rebuilt on the fly as ``U_h[dx:dx+H] @ grid @ U_w[dy:dy+W]^T`` with
one-dimensional interpolation matrices ``U``, so the ``N x H x W`` masks never exist at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import progress
from ..errors import InputError
from ..explanation import Cost, Explanation
from ..model import Classifier
from ..targets import Targets, probabilities
from .base import Method, Needs, register
from .layout import Layout
from .perturbation import SCORES, baseline_param, check_baseline, class_scores, resolve_baseline

BORDERS = ("mirror", "clamp")
#: masked images per forward when ``batch_size`` is None: on a busy 2-core CPU, mobilenet_v2
#: at 224 px ran 4-10x faster per image in channels-last batches of 16 than alone
CPU_BATCH, GPU_BATCH = 32, 128
RECIPES = ("mindlens", "authors")


def interpolation_matrix(n_in: int, n_out: int, border: str, dtype: torch.dtype
                         ) -> torch.Tensor:
    """``[n_out, n_in]`` linear interpolation with pixel centres aligned
    (``align_corners=False``): ``"clamp"`` equals ``torch.nn.functional.interpolate``,
    ``"mirror"`` mirrors about the edge samples as scikit-image's ``resize(order=1,
    mode="reflect")`` (SciPy ``"mirror"``), the authors' choice."""
    scale = n_in / n_out
    pos = (torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5
    if border == "clamp":
        pos = pos.clamp(0, n_in - 1)
    elif n_in > 1:
        period = 2 * (n_in - 1)
        pos = pos.abs().remainder(period)
        pos = torch.where(pos > n_in - 1, period - pos, pos)
    else:
        pos = torch.zeros_like(pos)
    lo = pos.floor().clamp(0, max(n_in - 2, 0)).long()
    frac = pos - lo
    u = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    u[rows, lo] += 1 - frac
    if n_in > 1:
        u[rows, lo + 1] += frac
    return u.to(dtype)


@dataclass
class MaskSet:
    """``N`` RISE masks as grids and shifts; :meth:`masks` builds any range of them."""

    grids: torch.Tensor  # [N, s, s] bool
    shifts: torch.Tensor  # [N, 2] long: row and column offset of the crop
    u_h: torch.Tensor  # [(s+1) C_h, s]
    u_w: torch.Tensor  # [(s+1) C_w, s]
    size: tuple[int, int]

    def __len__(self) -> int:
        return int(self.grids.shape[0])

    def masks(self, start: int, stop: int, dtype: torch.dtype = torch.float64,
              device: torch.device | str = "cpu") -> torch.Tensor:
        """Masks ``start .. stop-1`` as ``[k, H, W]`` in [0, 1]."""
        h, w = self.size
        g = self.grids[start:stop].to(device=device, dtype=dtype)
        dy, dx = self.shifts[start:stop, 0], self.shifts[start:stop, 1]
        rows = (dy[:, None] + torch.arange(h)).to(device)
        cols = (dx[:, None] + torch.arange(w)).to(device)
        uh = self.u_h.to(device=device, dtype=dtype)[rows]  # [k, H, s]
        uw = self.u_w.to(device=device, dtype=dtype)[cols]  # [k, W, s]
        return uh @ g @ uw.transpose(1, 2)


def make_masks(n: int, s: int, p1: float, size: tuple[int, int], seed: int,
               border: str = "mirror", recipe: str = "mindlens") -> MaskSet:
    """The authors' recipe (Petsiuk et al. 2018, ``eclique/RISE`` ``generate_masks``): cell
    size ``C = ceil(H / s)``, grid cells kept with probability ``p1``, bilinear upsampling
    to ``(s + 1) C``, crop at a random shift in ``[0, C)``. ``recipe="mindlens"`` draws with
    a torch CPU generator (grids, then shifts); ``"authors"`` with NumPy's
    ``RandomState(seed)`` in the authors' call order (all grids, then two ``randint`` per
    mask), which gives their masks exactly for the same seed."""
    h, w = size
    ch, cw = math.ceil(h / s), math.ceil(w / s)
    if recipe == "authors":
        rs = np.random.RandomState(seed)
        grids = torch.from_numpy(rs.rand(n, s, s) < p1)
        shifts = torch.tensor([[rs.randint(0, ch), rs.randint(0, cw)] for _ in range(n)],
                              dtype=torch.long).reshape(n, 2)
    else:
        gen = torch.Generator("cpu").manual_seed(seed)
        grids = torch.rand(n, s, s, generator=gen, dtype=torch.float64) < p1
        shifts = torch.stack([torch.randint(0, ch, (n,), generator=gen),
                              torch.randint(0, cw, (n,), generator=gen)], dim=1)
    return MaskSet(grids, shifts, interpolation_matrix(s, (s + 1) * ch, border, torch.float64),
                   interpolation_matrix(s, (s + 1) * cw, border, torch.float64), (h, w))


@register
class Rise(Method):
    """RISE (Petsiuk, Das, Saenko 2018, "RISE: Randomized Input Sampling for Explanation of
    Black-box Models", BMVC, arXiv:1806.07421).

    ``n_masks`` masks from an ``s x s`` grid whose cells are kept with probability ``p1``
    (defaults: the authors' PyTorch demo, 6000 / 8 / 0.1), shared by all images of a call
    and regenerated chunk by chunk (``batch_size`` masked images per forward; None: 32 on
    a CPU, 128 on a GPU). ``score``:
    ``prob`` (the authors'), ``logit`` or ``log_prob``. ``fill``: what masked-out pixels
    become, ``"zero"`` (model space: the mean colour, the authors'), ``"mean"``, ``"blur"``,
    a pixel value or a model-space tensor (the input is ``x M + b (1 - M)``).
    """

    name = "rise"
    title = "RISE"
    needs = Needs()
    meaning = ("Bright pixels are those whose presence keeps the class score high when the "
               "image is randomly masked: the expected score when the pixel is visible.")
    reference = "Petsiuk, Das, Saenko 2018, arXiv:1806.07421"
    defaults: dict[str, Any] = {"n_masks": 6000, "s": 8, "p1": 0.1, "score": "prob",
                                "fill": "zero", "blur_sigma": 5.0, "border": "mirror",
                                "seed": 0, "batch_size": None, "mask_recipe": "mindlens",
                                "channels_last": True}

    faster = "fewer masks (e.g. n_masks=1000: a noisier map, sooner)"

    def passes(self, clf: Classifier, x: torch.Tensor) -> int:
        """Model passes of one call: one per mask and one clean pass, per image."""
        return x.shape[0] * (int(self.params["n_masks"]) + 1)

    def validate(self) -> None:
        p = self.params
        for key in ("n_masks", "s"):
            if not isinstance(p[key], int) or isinstance(p[key], bool) or p[key] < 1:
                raise InputError(f"{key} must be a positive integer, got {p[key]!r}")
        if not isinstance(p["p1"], (int, float)) or not 0 < p["p1"] <= 1:
            raise InputError(f"p1 (the keep probability of a grid cell) must be in (0, 1], "
                             f"got {p['p1']!r}")
        if p["score"] not in SCORES:
            raise InputError(f"score must be one of {', '.join(SCORES)}, got {p['score']!r}")
        check_baseline(p["fill"])
        for key, options in (("border", BORDERS), ("mask_recipe", RECIPES)):
            if p[key] not in options:
                raise InputError(f"{key} must be one of {', '.join(options)}, got {p[key]!r}")
        bs = p["batch_size"]
        if bs is not None and (not isinstance(bs, int) or isinstance(bs, bool) or bs < 1):
            raise InputError(f"batch_size must be a positive integer or None (automatic), "
                             f"got {bs!r}")

    def run(self, clf: Classifier, x: torch.Tensor, targets: Targets) -> Explanation:
        p = self.params
        if x.dim() != 4:
            raise InputError(f"rise takes [B, C, H, W] images, got {tuple(x.shape)}")
        x = x.detach()
        b, _, h, w = x.shape
        masks = make_masks(p["n_masks"], p["s"], float(p["p1"]), (h, w), int(p["seed"]),
                           p["border"], p["mask_recipe"])
        fill = resolve_baseline(p["fill"], clf, x, [float(p["blur_sigma"])] * 2)
        zero_fill = isinstance(p["fill"], str) and p["fill"] == "zero"
        per_pass = p["batch_size"] or (CPU_BATCH if x.device.type == "cpu" else GPU_BATCH)
        k_max = max(1, per_pass // b)
        layout = Layout(x, bool(p["channels_last"]))
        n = len(masks)
        with clf.patched(), torch.inference_mode():
            logits = layout.call(clf, x)
            progress.tick(b)
            classes = targets.resolve(logits)
            n_t = classes.shape[1]
            acc = torch.zeros(b, n_t, h * w, dtype=torch.float64, device=x.device)
            steps = math.ceil(n / math.ceil(n / k_max))
            calls = 0
            for start in range(0, n, steps):
                stop = min(start + steps, n)
                m = masks.masks(start, stop, x.dtype, x.device)  # [k, H, W]
                k = stop - start
                mk = m[None, :, None]  # [1, k, 1, H, W]
                inp = x[:, None] * mk if zero_fill else \
                    fill[:, None] + (x - fill)[:, None] * mk
                out = layout.call(clf, inp.reshape(b * k, *x.shape[1:]))
                progress.tick(b * k)
                calls += 1
                sc = class_scores(out, classes.repeat_interleave(k, dim=0), p["score"], targets)
                sc = sc.view(b, k, n_t).double()
                acc += torch.einsum("bkt,kp->btp", sc, m.flatten(1).double())
            acc /= n * float(p["p1"])
        # leave inference mode: callers may use the results with autograd later
        maps = acc.view(b, n_t, h, w).to(x.dtype).clone()
        logits, classes = logits.clone(), classes.clone()
        return Explanation(
            logits=logits.detach(),
            method=self.name, maps=maps, targets=classes,
            scores=targets.scores(logits, classes), probs=probabilities(logits, classes),
            signed=p["score"] != "prob", params=dict(p, fill=baseline_param(p["fill"])),
            native_shape=(p["s"], p["s"]), cost=Cost(forward=n + 1),
            extras={"calls": calls + 1},
        )

