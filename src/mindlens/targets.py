"""Which class scores to explain: ``None`` (the top-k predicted classes), an index, one
index per image, or a callable ``logits -> score per sample``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .errors import InputError, ModelError
from .model import probabilities_of

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
TargetLike = int | Sequence[int] | torch.Tensor | ScoreFn | None


@dataclass(frozen=True)
class Targets:
    """A request for targets, resolved against the logits of one clean forward pass."""

    target: TargetLike = None
    top_k: int = 1
    #: with ``target=None``: explain every class whose probability is at least this
    #: (multi-label models: every label above the threshold), at least the most probable
    threshold: float | None = None
    #: the model's output kind, for ``threshold`` (see :data:`mindlens.model.OUTPUTS`)
    output: str = "softmax"

    def __post_init__(self) -> None:
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise InputError(f"top_k must be a positive integer, got {self.top_k!r}")
        if self.threshold is not None and not (
                isinstance(self.threshold, (int, float)) and 0 < self.threshold < 1):
            raise InputError(f"threshold must be a probability in (0, 1), got "
                             f"{self.threshold!r}")
        if self.target is not None and not callable(self.target):
            object.__setattr__(self, "target", class_indices(self.target))

    def split(self, batch: int, start: int, stop: int) -> Targets:
        """The request for images ``start:stop`` of a batch of ``batch`` images (one
        index per image is sliced; a single index or a callable is shared)."""
        t = self.target
        if isinstance(t, torch.Tensor) and t.dim() >= 1:
            if t.shape[0] != batch:
                raise InputError(
                    f"target has {t.shape[0]} entries for {batch} images; give one class "
                    f"index per image, or a single index for all")
            return Targets(t[start:stop], self.top_k, self.threshold, self.output)
        return self

    @property
    def score_fn(self) -> ScoreFn | None:
        return self.target if callable(self.target) else None

    def resolve(self, logits: torch.Tensor) -> torch.Tensor:
        """Class indices ``[B, T]`` (``-1`` for a callable target). Every method resolves
        its targets on the clean logits, so this is also where non-finite logits are
        refused (once per call, not once per forward pass)."""
        b, k = logits.shape
        if not torch.isfinite(logits.detach()).all():
            rows = (~torch.isfinite(logits.detach())).any(dim=1).nonzero().flatten().tolist()
            raise ModelError(
                f"the model returned NaN or infinite logits (batch rows {rows[:5]}) for finite "
                f"inputs; its weights or a layer overflow. Check the weights and the input "
                f"normalisation (mean/std)")
        t = self.target
        if callable(t):
            return torch.full((b, 1), -1, dtype=torch.long, device=logits.device)
        if t is None and self.threshold is not None:
            # the labels above the threshold are the most probable ones (the probability
            # grows with the logit); in a batch every image gets the largest count, padded
            # with its next most probable labels
            above = (probabilities_of(logits, self.output) >= self.threshold).sum(dim=1)
            return logits.topk(max(1, int(above.max())), dim=1).indices
        if t is None:
            if self.top_k > k:
                raise InputError(f"top_k={self.top_k} but the model has only {k} classes")
            return logits.topk(self.top_k, dim=1).indices
        idx = torch.as_tensor(t, dtype=torch.long, device=logits.device)
        if idx.dim() == 0:
            idx = idx.expand(b)
        if idx.dim() == 1:
            if idx.shape[0] != b:
                raise InputError(
                    f"target has {idx.shape[0]} entries for {b} images; give one class index "
                    f"per image, or a single index for all"
                )
            idx = idx[:, None]
        if idx.dim() != 2 or idx.shape[0] != b:
            raise InputError(f"target must be an index, one per image, or [B, T]; got {t!r}")
        if (idx < 0).any() or (idx >= k).any():
            raise InputError(f"target class out of range: the model has classes 0..{k - 1}")
        return idx

    def scores(self, logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """The explained score ``[B, T]``: the target logits, or the callable's value."""
        fn = self.score_fn
        if fn is not None:
            value = fn(logits)
            if value.shape != (logits.shape[0],):
                raise InputError(
                    f"a target callable must return one score per image, shape "
                    f"[{logits.shape[0]}], got {tuple(value.shape)}"
                )
            return value[:, None]
        return logits.gather(1, classes)


def class_indices(target: object) -> torch.Tensor:
    """A target given as an index, a list or an array -> a ``long`` tensor; refuses
    anything that is not a whole number (``1.5`` must not quietly become class 1)."""
    if isinstance(target, bool):
        raise InputError(f"target must be a class index (an integer), got {target!r}")
    try:
        t = torch.as_tensor(target)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"target must be a class index, one per image, or a callable; got "
                         f"{target!r}") from None
    if t.dtype == torch.bool or t.is_complex():
        raise InputError(f"target must hold integer class indices, got {t.dtype}")
    if t.is_floating_point() and (not torch.isfinite(t).all() or (t != t.round()).any()):
        raise InputError(f"target must hold whole class indices, got {target!r}; "
                         f"a fractional class is not a class")
    return t.long()


def probabilities(logits: torch.Tensor, classes: torch.Tensor, output: str = "softmax"
                  ) -> torch.Tensor:
    """The probability of each target ``[B, T]`` (NaN for a callable target), per the
    model's ``output`` kind (:meth:`mindlens.Classifier.probabilities`; methods that do not
    pass it get softmax, and :meth:`~mindlens.methods.base.Method.explain` corrects that
    for the other kinds)."""
    probs = probabilities_of(logits, output)
    out = torch.full(classes.shape, float("nan"), dtype=probs.dtype, device=probs.device)
    valid = classes >= 0
    out[valid] = probs.gather(1, classes.clamp_min(0))[valid]
    return out


def class_index(labels: Sequence[str] | None, name: str) -> int:
    """The index of the class called ``name`` (exact, else case-insensitive, else the one
    label that contains it as a word, e.g. ``"tabby"`` for ``"tabby cat"``); an
    :class:`InputError` with a did-you-mean otherwise."""
    import difflib

    if labels is None:
        raise InputError(f"cannot find the class {name!r}: the model has no class names "
                         f"(give \"labels\" in its model card, or a class index)")
    labels = list(labels)
    if name in labels:
        return labels.index(name)
    low = [lab.lower() for lab in labels]
    key = name.strip().lower()
    if key in low:
        return low.index(key)
    words = [i for i, lab in enumerate(low) if key in lab.replace(",", " ").split()
             or key in [part.strip() for part in lab.split(",")]]
    if len(words) == 1:
        return words[0]
    near = difflib.get_close_matches(key, low, n=3, cutoff=0.6)
    hint = (f"; did you mean {' or '.join(repr(labels[low.index(n)]) for n in near)}?"
            if near else "")
    if len(words) > 1:
        hint = f"; it is part of {len(words)} class names, e.g. " + ", ".join(
            repr(labels[i]) for i in words[:3]) + ": give the full name"
    raise InputError(f"the model has no class named {name!r}{hint}")
