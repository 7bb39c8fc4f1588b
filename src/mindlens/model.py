"""The classifier under study: a ``torch.nn.Module`` plus what its inputs must look like.

A :class:`Classifier` knows its input size, channels, normalisation and class names. It
turns files, PIL images, arrays and tensors into model-space batches, runs the model,
finds layers by name (``"auto"`` = the last module whose output is a spatial feature map)
and hands out the one reversible patching context (:class:`~mindlens.patching.ModelPatch`)
through which every method hooks the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .blackbox import BlackBox
from .errors import InputError, ModelError
from .io import (
    as_image_array,
    as_volume_array,
    display_name,
    is_volume_path,
    match_channels,
    pil_to_array,
    read_image,
    read_volume,
    volume_to_unit,
)
from .patching import ModelPatch, is_scripted, model_lock

ImageLike = str | Path | Image.Image | np.ndarray | torch.Tensor
RESIZE_MODES = ("stretch", "crop", "pad")

#: what the model's logits mean, and how they become probabilities
#: (:meth:`Classifier.probabilities`, the one place that turns logits into probabilities)
OUTPUTS = {
    "softmax": "one class out of K (softmax over the logits)",
    "sigmoid": "multi-label: K independent labels, one sigmoid each",
    "single_logit": "one logit [B, 1]: the positive class (sigmoid) and its complement",
}
_PROBABILITIES = {"softmax": lambda z: z.softmax(dim=1), "sigmoid": torch.sigmoid,
                  "single_logit": torch.sigmoid}


def probabilities_of(logits: torch.Tensor, output: str = "softmax") -> torch.Tensor:
    """Probabilities ``[B, K]`` for logits ``[B, K]`` of an ``output`` kind (see
    :data:`OUTPUTS`); :meth:`Classifier.probabilities` for a given model."""
    return _PROBABILITIES[output](logits.detach())


@dataclass(frozen=True)
class InputSpec:
    """How a raw image becomes model input: resize to ``size`` (``[H, W]``, or ``[D, H, W]``
    for volumes), scale pixels to [0, 1], then ``(x - mean) / std`` per channel."""

    size: tuple[int, ...]
    channels: int = 3
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if len(self.size) not in (2, 3) or min(self.size) < 1:
            raise InputError(
                f"input_size must be [H, W] (images) or [D, H, W] (volumes) with positive "
                f"values, got {self.size}"
            )
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, self.channels):
                raise InputError(
                    f"{name} has {len(values)} values but the model has {self.channels} channels"
                )
        if any(s <= 0 for s in self.std):
            raise InputError(f"std must be positive, got {self.std}")

    def _stats(self, values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
        t = torch.tensor(values, dtype=like.dtype, device=like.device)
        return t.expand(self.channels).view(1, -1, *([1] * (like.dim() - 2)))

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] -> model space."""
        return (pixels - self._stats(self.mean, pixels)) / self._stats(self.std, pixels)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Model space -> pixels in [0, 1] (not clipped)."""
        return x * self._stats(self.std, x) + self._stats(self.mean, x)

    def bounds(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model-space box ``[low, high]`` of valid pixels, per channel."""
        return self.normalize(torch.zeros_like(like)), self.normalize(torch.ones_like(like))


def fit_aspect(t: torch.Tensor, size: tuple[int, ...], mode: str) -> torch.Tensor:
    """Bring ``[1, C, h, w]`` to the aspect ratio of ``size`` by a centred crop or by black
    (zero) padding; ``"stretch"`` leaves it as it is (the resize then stretches it)."""
    h, w = t.shape[-2:]
    th, tw = size
    if mode == "stretch" or h * tw == w * th:
        return t
    if mode == "crop":
        if w * th > h * tw:  # too wide
            cw = max(1, round(h * tw / th))
            x0 = (w - cw) // 2
            return t[..., :, x0:x0 + cw]
        ch = max(1, round(w * th / tw))
        y0 = (h - ch) // 2
        return t[..., y0:y0 + ch, :]
    if w * th > h * tw:  # pad: too wide -> taller
        ph = round(w * th / tw) - h
        return F.pad(t, (0, 0, ph // 2, ph - ph // 2))
    pw = round(h * tw / th) - w
    return F.pad(t, (pw // 2, pw - pw // 2, 0, 0))


@dataclass
class Classifier:
    """A trained image classifier and everything mindlens needs to know about its input.

    ``logit_offset`` drops leading extra logits (ImageNet MobileNets from TensorFlow have a
    'background' logit at index 0); ``labels`` names the remaining classes. A model given as
    a :class:`~mindlens.blackbox.BlackBox` (any callable, or an ONNX file) is a black box.

    ``output`` says what the logits mean (:data:`OUTPUTS`): ``"softmax"`` (default, one
    class out of K), ``"sigmoid"`` (multi-label, one probability per label) or
    ``"single_logit"`` (a ``[B, 1]`` output; ``labels`` is ``[positive]`` or
    ``[negative, positive]``).
    """

    module: nn.Module
    #: ``(H, W)`` for images, ``(D, H, W)`` for a volume model (e.g. ``Conv3d``)
    input_size: tuple[int, ...]
    channels: int = 3
    mean: Sequence[float] = (0.0,)
    std: Sequence[float] = (1.0,)
    labels: Sequence[str] | None = None
    logit_offset: int = 0
    name: str = "model"
    #: only outputs can be read (a callable or an ONNX file): no gradients, layers or hooks
    black_box: bool = False
    output: str = "softmax"
    #: SHA-256 of the model card it was loaded from (recorded in every explanation)
    card_sha256: str | None = None
    #: how an image of another shape reaches ``input_size``: ``"stretch"`` (resize, the
    #: aspect ratio changes; the default, as most models are trained), ``"crop"`` (the
    #: centred largest part with the model's aspect ratio) or ``"pad"`` (black borders)
    resize: str = "stretch"
    spec: InputSpec = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.module, nn.Module):
            raise ModelError(
                f"Classifier needs a torch.nn.Module, got {type(self.module).__name__}"
            )
        if isinstance(self.logit_offset, bool) or not isinstance(self.logit_offset, int) \
                or self.logit_offset < 0:
            raise InputError(f"logit_offset must be an integer >= 0, got {self.logit_offset!r}")
        self.input_size = tuple(int(s) for s in self.input_size)  # type: ignore[assignment]
        self.spec = InputSpec(
            self.input_size, int(self.channels), tuple(map(float, self.mean)),
            tuple(map(float, self.std)),
        )
        if self.output not in OUTPUTS:
            raise InputError(f"output must be one of {', '.join(OUTPUTS)}, got {self.output!r}")
        self._negative_label: str | None = None
        if self.labels is not None:
            self.labels = [str(label) for label in self.labels]
            if self.output == "single_logit":
                if len(self.labels) not in (1, 2):
                    raise InputError(
                        f"a single-logit model takes labels [positive] or [negative, "
                        f"positive], got {len(self.labels)} labels")
                if len(self.labels) == 2:
                    self._negative_label = self.labels[0]
                    self.labels = self.labels[1:]
        if self.resize not in RESIZE_MODES:
            raise InputError(f"resize must be one of {', '.join(RESIZE_MODES)}, got "
                             f"{self.resize!r}")
        self.black_box = bool(self.black_box) or isinstance(self.module, BlackBox)
        self._checked = False
        self._auto_layers: dict[tuple[int, ...], tuple[str, nn.Module]] = {}

    # -- properties ----------------------------------------------------------------------
    @property
    def scripted(self) -> bool:
        return is_scripted(self.module)

    @property
    def volumetric(self) -> bool:
        """Whether the model takes volumes ``[B, C, D, H, W]`` (a 3-value input size)."""
        return len(self.input_size) == 3

    @property
    def device(self) -> torch.device:
        for p in self.module.parameters():
            return p.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for p in self.module.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    @property
    def negative_label(self) -> str:
        """A single-logit model's complement class: ``labels[0]`` of a two-label card, or
        ``"not <positive>"``."""
        return self._negative_label or f"not {self.label(0)}"

    def label(self, index: int) -> str:
        if self.labels is not None and 0 <= index < len(self.labels):
            return self.labels[index]
        return f"class {index}"

    # -- running -------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, classes]`` (extra leading logits dropped). Runs under the model's
        lock, so a call never sees another thread's patched model."""
        with model_lock(self.module):
            out = self.module(x)
        if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
            out = out[0]
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ModelError(
                f"the model returned {shape} for a batch of {x.shape[0]}; mindlens explains "
                f"classifiers whose output is logits [B, classes]. Wrap the model so that "
                f"forward() returns [B, classes] (e.g. add .flatten(1) or pick the logits "
                f"from a tuple)."
            )
        if self.logit_offset:
            if out.shape[1] - self.logit_offset < 2:
                raise ModelError(
                    f"logit_offset={self.logit_offset} leaves {out.shape[1] - self.logit_offset}"
                    f" of the model's {out.shape[1]} logits; a classifier needs at least 2 "
                    f"classes. Lower logit_offset (it drops leading extra logits)")
            out = out[:, self.logit_offset :]
        if self.output == "single_logit" and out.shape[1] != 1:
            raise ModelError(
                f"the model card says output 'single_logit' but the model returned "
                f"{out.shape[1]} logits per image; a single-logit model returns [B, 1] (use "
                f"'softmax' or 'sigmoid' for K outputs)")
        if self.labels is not None and out.shape[1] != len(self.labels) and not self._checked:
            if len(self.labels) == out.shape[1] + self.logit_offset:  # names of extra logits
                self.labels = list(self.labels)[self.logit_offset :]
                return out
            raise ModelError(
                f"the model has {out.shape[1]} classes (after logit_offset="
                f"{self.logit_offset}) but {len(self.labels)} labels were given"
            )
        self._checked = True
        return out

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities ``[B, K]`` for logits ``[B, K]``, per :attr:`output`: softmax over
        the classes, or one sigmoid per label (multi-label and single-logit models; for a
        single logit it is the positive class's probability, the complement is ``1 - p``)."""
        return probabilities_of(logits, self.output)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities ``[B, classes]`` (:meth:`probabilities`) in eval mode, model left
        as it was."""
        with self.patched():
            return self.probabilities(self(x))

    @torch.no_grad()
    def target_probabilities(self, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """The probability of each target ``classes [B, T]`` (NaN where ``-1``, a custom
        score)."""
        probs = self.predict(x)
        out = torch.full(classes.shape, float("nan"), dtype=probs.dtype, device=probs.device)
        valid = classes >= 0
        out[valid] = probs.gather(1, classes.clamp_min(0).to(probs.device))[valid]
        return out

    @contextmanager
    def patched(self):
        """The reversible patching context: ``with clf.patched() as patch: ...``."""
        with ModelPatch(self.module) as patch:
            yield patch

    # -- input ---------------------------------------------------------------------------
    def check_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Validate a model-space batch ``[B, C, H, W]`` (or a volume batch
        ``[B, C, D, H, W]``) and move it to the model."""
        if not isinstance(x, torch.Tensor):
            raise InputError(f"expected a tensor, got {type(x).__name__}")
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.dim() not in (4, 5):
            raise InputError(
                f"a model-space batch must be [B, C, H, W] (or [B, C, D, H, W] for volumes); "
                f"got shape {tuple(x.shape)}"
            )
        if 0 in x.shape:
            raise InputError(f"the batch is empty or has zero size: {tuple(x.shape)}")
        if x.shape[1] != self.channels:
            raise InputError(
                f"the tensor has {x.shape[1]} channels but the model expects {self.channels} "
                f"(shape {tuple(x.shape)}; tensors are taken as [B, C, H, W], already "
                f"preprocessed)"
            )
        if not x.is_floating_point():
            raise InputError(
                f"a model-space tensor must be floating point, got {x.dtype}; pass images as "
                f"arrays or files to have them preprocessed"
            )
        if not torch.isfinite(x).all():
            raise InputError("the input tensor contains NaN or infinite values")
        return x.to(device=self.device, dtype=self.dtype)

    def to_pixels(self, image: ImageLike, source: str = "image",
                  max_pixels: int | None = None) -> np.ndarray:
        """One image -> ``float32 [H, W, C]`` in [0, 1] with the model's channel count
        (a file over ``max_pixels`` pixels is refused, one much larger than the input size
        shrunk while read; see :func:`mindlens.io.read_image`)."""
        if isinstance(image, (str, Path)):
            arr = read_image(image, size=self.input_size, max_pixels=max_pixels)
            source = display_name(image)
        elif isinstance(image, Image.Image):
            arr = pil_to_array(image, source)
        else:
            arr = as_image_array(image, source)
        return match_channels(arr, self.channels, source)

    def preprocess(self, images: ImageLike | Sequence[ImageLike],
                   max_pixels: int | None = None) -> torch.Tensor:
        """Files, PIL images or arrays -> a model-space batch ``[B, C, H, W]``; for a volume
        model (3-value ``input_size``), volume files or arrays -> ``[B, C, D, H, W]``.

        A tensor is taken as already preprocessed and only validated. ``max_pixels``: the
        largest image file read (default :data:`mindlens.io.MAX_PIXELS`, 50 megapixels).
        """
        if isinstance(images, torch.Tensor):
            return self.check_tensor(images)
        if self.volumetric:
            return self.preprocess_volumes(images)
        if isinstance(images, (str, Path)) and is_volume_path(images):
            raise InputError(
                f"{images} is a volume, but this model takes 2-D images (input_size "
                f"{list(self.input_size)}); a volume model's card gives input_size [D, H, W]"
            )
        if isinstance(images, (str, Path, Image.Image)) or (
            isinstance(images, np.ndarray) and images.ndim in (2, 3)
        ):
            images = [images]
        if len(images) == 0:
            raise InputError("no images were given")
        batch = [self.pixels_to_tensor(self.to_pixels(im, f"image {i}", max_pixels))
                 for i, im in enumerate(images)]
        return torch.cat(batch).to(device=self.device, dtype=self.dtype)

    def preprocess_volumes(self, volumes: Any) -> torch.Tensor:
        """Volume files (NIfTI, ``.npy``) or arrays ``[D, H, W]`` / ``[C, D, H, W]`` -> a
        model-space batch ``[B, C, D, H, W]``: intensities scaled to [0, 1] by each volume's
        own range, resized trilinearly to ``input_size``, then normalised."""
        if isinstance(volumes, (str, Path)) or (isinstance(volumes, np.ndarray)
                                                and volumes.ndim in (3, 4)):
            volumes = [volumes]
        if len(volumes) == 0:
            raise InputError("no volumes were given")
        batch = []
        for i, vol in enumerate(volumes):
            if isinstance(vol, (str, Path)):
                arr = read_volume(vol)
            elif isinstance(vol, Image.Image):
                raise InputError(
                    f"this model takes volumes (input_size {list(self.input_size)}), but "
                    f"volume {i} is a 2-D picture; give a NIfTI/.npy file or a [D, H, W] array"
                )
            else:
                arr = as_volume_array(vol, f"volume {i}")
            batch.append(self.volume_to_tensor(arr, str(vol) if isinstance(vol, (str, Path))
                                               else f"volume {i}"))
        return torch.cat(batch).to(device=self.device, dtype=self.dtype)

    def volume_to_tensor(self, vol: np.ndarray, source: str = "volume") -> torch.Tensor:
        """``[D, H, W]`` or ``[C, D, H, W]`` raw intensities -> normalised
        ``[1, C, d, h, w]`` at the model's size."""
        if vol.ndim == 3:
            vol = vol[None]
        c = vol.shape[0]
        if c != self.channels and c != 1:
            raise InputError(
                f"{source} has {c} channels (shape {vol.shape}, read as [C, D, H, W]) but "
                f"the model expects {self.channels}"
            )
        t = torch.from_numpy(np.ascontiguousarray(volume_to_unit(vol)))[None].float()
        if c != self.channels:
            t = t.expand(-1, self.channels, -1, -1, -1)
        if tuple(t.shape[-3:]) != self.input_size:
            t = F.interpolate(t, size=self.input_size, mode="trilinear", align_corners=False)
        return self.spec.normalize(t)

    def pixels_to_tensor(self, pixels: np.ndarray) -> torch.Tensor:
        """``[H, W, C]`` pixels in [0, 1] -> normalised ``[1, C, h, w]`` at the model's size."""
        t = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].float()
        t = fit_aspect(t, self.input_size, self.resize)
        if tuple(t.shape[-2:]) != self.input_size:
            t = F.interpolate(t, size=self.input_size, mode="bilinear", align_corners=False,
                              antialias=True)
        return self.spec.normalize(t)

    def display_pixels(self, x: torch.Tensor) -> np.ndarray:
        """Model-space batch -> ``uint8 [B, H, W, 3]`` for display (``[B, D, H, W, 3]`` for
        volumes)."""
        px = self.spec.denormalize(x.detach().float().cpu()).clamp(0, 1)
        if px.shape[1] == 1:
            px = px.expand(-1, 3, *px.shape[2:])
        return (px[:, :3].movedim(1, -1).numpy() * 255).round().astype(np.uint8)

    def __repr__(self) -> str:
        from .notebook import classifier_repr

        return classifier_repr(self)

    def _repr_html_(self) -> str:
        from .notebook import classifier_html

        return classifier_html(self)

    # -- layers --------------------------------------------------------------------------
    def layer(self, name: str | nn.Module = "auto", example: torch.Tensor | None = None
              ) -> tuple[str, nn.Module]:
        """Resolve a layer by dotted name, or ``"auto"``: the last module to finish whose
        output is a spatial feature map ``[B, C, h, w]`` with ``h * w > 1`` (for volumes
        ``[B, C, d, h, w]`` with ``d * h * w > 1``: the input's number of dimensions)."""
        if self.scripted:
            raise ModelError(
                "this is a TorchScript model: it runs no Python hooks, so layer-based methods "
                "(CAM, Grad-CAM, LRP, ...) cannot see inside it. Load the model from its "
                "Python code and weights (\"factory\" + \"weights\" in the model card), or use "
                "saliency or occlusion."
            )
        if isinstance(name, nn.Module):
            for qual, mod in self.module.named_modules():
                if mod is name:
                    return qual, mod
            raise InputError("the given layer module is not part of this model")
        if name != "auto":
            try:
                return name, self.module.get_submodule(name)
            except AttributeError:
                near = [n for n, _ in self.module.named_modules() if n][-8:]
                raise InputError(
                    f"the model has no layer named {name!r}; layer names are dotted paths "
                    f"such as {', '.join(near)} (see `mindlens layers`)"
                ) from None
        if example is None:
            example = torch.zeros(1, self.channels, *self.input_size, device=self.device,
                                  dtype=self.dtype)
        key = tuple(example.shape[1:])
        if key not in self._auto_layers:
            self._auto_layers[key] = self._auto_layer(example)
        return self._auto_layers[key]

    def _auto_layer(self, example: torch.Tensor) -> tuple[str, nn.Module]:
        finished: list[tuple[str, nn.Module]] = []
        names = {m: n for n, m in self.module.named_modules()}

        dims = example.dim()

        def record(module: nn.Module, _inputs: Any, output: Any) -> None:
            if (isinstance(output, torch.Tensor) and output.dim() == dims
                    and output[0, 0].numel() > 1 and module is not self.module):
                finished.append((names[module], module))

        with self.patched() as patch, torch.no_grad():
            for module in names:
                patch.forward_hook(module, record)
            self(example[:1])
        if not finished:
            raise ModelError(
                f"found no layer that outputs a spatial feature map "
                f"[B, C, {', '.join('dhw'[-(dims - 2):])}]; CAM-type "
                "methods need a convolutional layer (give layer= explicitly, or use saliency "
                "or occlusion)"
            )
        return finished[-1]

    def layer_names(self) -> list[str]:
        return [n for n, _ in self.module.named_modules() if n]
