"""Where a MACE unit attaches to a classifier, and what its output generator rebuilds.

The unit reads the last spatial feature map ``F`` (``clf.layer("auto")``). The reference
code rebuilds the first dense layer's activations and runs the frozen rest of a custom
dense head. Most CNNs have no such layer: their head is *global average pooling -> one
linear layer* (ResNet, MobileNet). mindlens therefore rebuilds **the input ``z`` of the
model's last linear layer** (its penultimate representation) and sends ``z_hat`` through
that frozen layer and a softmax:

- for a GAP + linear head, ``z`` is the pooled feature vector (64 values for ResNet-20).
  It is everything the head sees, so the surrogate is judged by the model's own
  classifier weights; rebuilding the logits instead would turn the output generator into
  a free classifier of its own, and rebuilding the spatial map ``F`` would ask spatially
  invariant embeddings for a layout;
- for a dense head (flatten -> dense -> ... -> logits), ``z`` is the last hidden layer, so
  only the last dense layer is run frozen (the reference runs all dense layers after the
  first one; mindlens cannot cut an arbitrary ``forward()`` in the middle);
- when the logits are not exactly ``W z + b`` of a linear layer (something runs after
  it), ``z`` is the logits themselves and the remainder is the identity (``head="logits"``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...errors import InputError, ModelError, NotApplicableError
from ...model import Classifier


@dataclass
class Attachment:
    """The feature layer, and the frozen last layer (``None``: reconstruct logits)."""

    layer: str
    head: str | None

    def head_module(self, clf: Classifier) -> nn.Module | None:
        return None if self.head is None else clf.module.get_submodule(self.head)


def _linear_like(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) or (
        isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1)


def head_logits(clf: Classifier, head: nn.Module | None, z: torch.Tensor) -> torch.Tensor:
    """The frozen remainder: ``z [B, n] -> logits [B, classes]`` through the last layer."""
    if head is None:
        return z
    w = head.weight.detach().flatten(1).to(z.dtype)  # type: ignore[union-attr]
    b = head.bias
    out = z @ w.T
    if b is not None:
        out = out + b.detach().to(z.dtype)
    return out[:, clf.logit_offset:]


class FeatureCapture:
    """Hooks that record ``F`` at the feature layer and the input of the last linear layer."""

    def __init__(self, clf: Classifier, layer: str) -> None:
        self.clf, self.layer = clf, layer
        self.F: torch.Tensor | None = None
        self.linear_inputs: list[tuple[str, torch.Tensor]] = []

    def run(self, x: torch.Tensor, watch: list[str] | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward ``x``; return ``(F, logits)``; ``linear_inputs`` holds the inputs of the
        linear layers named in ``watch`` (all linear-like layers after ``F`` if None)."""
        names = {m: n for n, m in self.clf.module.named_modules()}
        self.F, self.linear_inputs = None, []

        def grab_f(_m: nn.Module, _i: Any, out: Any) -> None:
            if self.F is not None:
                raise ModelError(f"layer {self.layer!r} runs more than once per forward pass; "
                                 f"MACE needs a feature layer that runs once")
            self.F = out.detach()

        def grab_z(m: nn.Module, inputs: Any, _out: Any) -> None:
            if self.F is not None and isinstance(inputs[0], torch.Tensor):
                self.linear_inputs.append((names[m], inputs[0].detach().flatten(1)))

        with self.clf.patched() as patch, torch.no_grad():
            patch.forward_hook(self.clf.module.get_submodule(self.layer), grab_f)
            for m, n in names.items():
                if (watch is None and _linear_like(m)) or (watch is not None and n in watch):
                    patch.forward_hook(m, grab_z)
            logits = self.clf(x)
        if self.F is None:
            raise ModelError(f"layer {self.layer!r} did not run in the forward pass")
        return self.F, logits.detach()


def attach(clf: Classifier, example: torch.Tensor) -> Attachment:
    """Find the feature layer and the head layer on one example batch."""
    try:
        layer, _ = clf.layer("auto", example=example[:1])
    except ModelError as err:
        raise NotApplicableError(
            "MACE needs a spatial feature map [B, C, h, w] with h*w > 1 (a convolutional "
            f"layer before the head); this model has none ({err}). Use saliency or occlusion."
        ) from None
    cap = FeatureCapture(clf, layer)
    _, logits = cap.run(example)
    for name, z in reversed(cap.linear_inputs):
        head = clf.module.get_submodule(name)
        if head.weight.flatten(1).shape[1] != z.shape[1]:  # type: ignore[union-attr]
            continue
        expected = head_logits(clf, head, z)
        if expected.shape == logits.shape:
            scale = float(logits.abs().max().clamp_min(1e-12))
            if torch.allclose(expected, logits, atol=1e-4 * scale, rtol=1e-4):
                return Attachment(layer, name)
        break
    return Attachment(layer, None)


def model_fingerprint(clf: Classifier) -> dict[str, str]:
    """SHA-256 of the model's weights (names, shapes, dtypes, bytes) and of its
    architecture (module names and types, input spec)."""
    w = hashlib.sha256()
    for name, t in clf.module.state_dict().items():
        shape = t.shape
        t = t.detach().cpu().contiguous().reshape(-1)
        w.update(f"{name}:{tuple(shape)}:{t.dtype};".encode())
        w.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    a = hashlib.sha256()
    for name, m in clf.module.named_modules():
        a.update(f"{name}:{type(m).__name__};".encode())
    a.update(repr((clf.spec, clf.logit_offset)).encode())
    return {"weights": w.hexdigest(), "architecture": a.hexdigest()}


def check_fingerprint(clf: Classifier, recorded: dict[str, str], trained_on: str) -> None:
    """Raise :class:`InputError` when the unit was trained for another model."""
    now = model_fingerprint(clf)
    diff = [k for k in ("architecture", "weights") if now.get(k) != recorded.get(k)]
    if diff:
        raise InputError(
            f"this MACE unit was trained for another model ({trained_on!r}); the "
            f"{' and '.join(diff)} of {clf.name!r} differ (fingerprint "
            f"{now['weights'][:12]} vs the unit's {recorded.get('weights', '?')[:12]}). A MACE "
            f"unit only explains the exact model it was trained on: train one for this model "
            f"with `mindlens mace train`."
        )
