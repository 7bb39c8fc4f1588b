"""Input checks shared by the metrics: batch-first maps ``[N, H, W]`` and masks."""

from __future__ import annotations

import torch

from ..errors import InputError


def check_maps(maps: torch.Tensor, name: str = "maps") -> torch.Tensor:
    """A float batch of 2-D maps ``[N, H, W]``."""
    if not isinstance(maps, torch.Tensor):
        raise InputError(f"{name} must be a torch tensor [N, H, W], got {type(maps).__name__}")
    if maps.dim() != 3:
        raise InputError(
            f"{name} must be [N, H, W] (one 2-D map per image); got shape {tuple(maps.shape)}. "
            f"Take one target of an Explanation with expl.maps[:, 0]."
        )
    if not maps.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor, got {maps.dtype}")
    if not torch.isfinite(maps).all():
        raise InputError(f"{name} contain NaN or infinite values")
    return maps


def check_masks(maps: torch.Tensor, masks: torch.Tensor, name: str = "masks") -> torch.Tensor:
    """A bool batch of masks with exactly the shape of ``maps``."""
    check_maps(maps)
    if not isinstance(masks, torch.Tensor) or masks.dtype != torch.bool:
        got = masks.dtype if isinstance(masks, torch.Tensor) else type(masks).__name__
        raise InputError(f"{name} must be a bool tensor [N, H, W], got {got}")
    if masks.shape != maps.shape:
        raise InputError(
            f"{name} have shape {tuple(masks.shape)} but the maps have {tuple(maps.shape)}; "
            f"resize the masks to the model's input size (nearest neighbour) first"
        )
    return masks.to(maps.device)


def empty_to_nan(scores: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Set the score of every image whose mask is empty to NaN (undefined, not 0)."""
    empty = ~masks.flatten(1).any(dim=1)
    return scores.masked_fill(empty, float("nan"))


def flat(maps: torch.Tensor) -> torch.Tensor:
    """True per image whose map is constant ``[N]``: it ranks no pixel above another."""
    f = maps.flatten(1)
    return f.amax(dim=1) == f.amin(dim=1)


def flat_to_nan(scores: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Set the score of every image whose map is flat to NaN (undefined, not a number
    decided by which pixel comes first)."""
    return scores.masked_fill(flat(maps).to(scores.device), float("nan"))
