"""The result of one explanation call, with everything needed to render or re-check it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class Cost:
    """What an explanation cost: passes actually run and wall-clock seconds."""

    forward: int = 0
    backward: int = 0
    seconds: float = 0.0


@dataclass
class Explanation:
    """Relevance maps for ``B`` images and ``T`` targets each.

    - ``maps``: float ``[B, T, H, W]`` at input resolution, raw values (signed where the
      method is signed); colour and normalisation happen only in :mod:`mindlens.render`.
    - ``raw``: input-shaped attributions ``[B, T, C, H, W]`` before the channel reduction
      (input-space methods only), for colour analysis.
    - ``targets``: class indices ``[B, T]`` (``-1`` for a callable target).
    - ``scores``: the explained score per target (the logit, unless the method says
      otherwise in ``params["score"]``); ``probs``: the probability per target
      (:meth:`~mindlens.model.Classifier.probabilities`: softmax, or a sigmoid per label).
    - ``native_shape``: the resolution the method really works at (e.g. 7x7 for Grad-CAM).
    - ``params``: every parameter with its default filled in, the layer actually used, and
      ``params["provenance"]`` (see :mod:`mindlens.provenance`).
    - ``extras["pixels"]``: the explained images as ``uint8 [B, H, W, 3]`` (2-D inputs), for
      :meth:`show` and the notebook's HTML view.
    - ``logits``: the model's outputs ``[B, K]`` on the unperturbed images, from the forward
      pass the method ran anyway (LRP's is its canonized forward, equal up to float
      rounding), so a caller needs no second pass for the prediction; ``None`` where a
      method does not give it.
    """

    method: str
    maps: torch.Tensor
    targets: torch.Tensor
    scores: torch.Tensor
    probs: torch.Tensor
    signed: bool
    params: dict[str, Any] = field(default_factory=dict)
    native_shape: tuple[int, ...] = ()
    cost: Cost = field(default_factory=Cost)
    raw: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    logits: torch.Tensor | None = None

    def __post_init__(self) -> None:
        b, t = self.targets.shape
        if self.maps.shape[:2] != (b, t):
            raise ValueError(f"maps {tuple(self.maps.shape)} do not match targets {(b, t)}")
        if self.logits is not None and self.logits.shape[0] != b:
            raise ValueError(f"logits {tuple(self.logits.shape)} do not match {b} images")

    @property
    def batch_size(self) -> int:
        return int(self.maps.shape[0])

    def map(self, image: int = 0, target: int = 0) -> torch.Tensor:
        """One ``[H, W]`` map."""
        return self.maps[image, target]

    def __repr__(self) -> str:
        from .notebook import explanation_repr

        return explanation_repr(self)

    def _repr_html_(self) -> str:
        from .notebook import explanation_html

        return explanation_html(self)

    def show(self, ax: Any = None) -> Any:
        """Draw the image and each map with its label (matplotlib); returns the figure."""
        from .notebook import show

        return show(self, ax)

    def save(self, path: str | Path) -> None:
        """Write to a ``.pt`` file that :meth:`load` reads back with ``weights_only=True``."""
        data = asdict(self)
        data["cost"] = asdict(self.cost)
        data["native_shape"] = list(self.native_shape)
        torch.save(data, Path(path))

    @classmethod
    def load(cls, path: str | Path) -> Explanation:
        data = torch.load(Path(path), map_location="cpu", weights_only=True)
        data["cost"] = Cost(**data["cost"])
        data["native_shape"] = tuple(data["native_shape"])
        return cls(**data)
