"""Long explanations say what they will cost before they start, and how far they are.

Perturbation methods know how many model passes a call needs before running one
(:meth:`mindlens.methods.Method.passes`). :func:`watch` turns that count into an estimate
(passes x the measured time of one pass, timed on a batch of copies of the first image,
so it is an upper bound for the incremental and approximate occlusion modes), warns with a
:class:`~mindlens.errors.CostWarning` when the estimate is over :data:`WARN_SECONDS`
(naming the faster options), and reports progress: the method calls :func:`tick` after
each pass, and the reporter set with :func:`reporting` (the CLI's progress bar) sees
``(label, done, total)``. Without a reporter nothing is printed. State is per thread
(context variables), so concurrent calls do not mix their counts.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch

from .errors import CostWarning

Reporter = Callable[[str, int, int], None]
#: an estimate above this many seconds is announced with a CostWarning
WARN_SECONDS = 120.0
#: calls with fewer passes are not timed (the estimate would cost more than it tells)
MIN_PASSES = 256
#: copies of the first image in the timed pass
TIMED_COPIES = 16

_reporter: ContextVar[Reporter | None] = ContextVar("mindlens_reporter", default=None)
_task: ContextVar[list[Any] | None] = ContextVar("mindlens_task", default=None)
_estimates: ContextVar[Callable[[Estimate], None] | None] = ContextVar(
    "mindlens_estimates", default=None)


@dataclass(frozen=True)
class Estimate:
    """The predicted cost of one call: ``passes`` model evaluations of one image each."""

    method: str
    passes: int
    seconds_per_pass: float

    @property
    def seconds(self) -> float:
        return self.passes * self.seconds_per_pass

    def describe(self) -> str:
        return (f"{self.method} will run about {self.passes:,} model passes, about "
                f"{duration(self.seconds)} on this machine ({self.seconds_per_pass * 1e3:.2f} "
                f"ms a pass)")


def duration(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def time_one_pass(clf: Any, x: torch.Tensor, copies: int = TIMED_COPIES) -> float:
    """Seconds per image of a forward pass on ``copies`` copies of the first image."""
    batch = x[:1].detach().expand(copies, *x.shape[1:]).contiguous()
    with clf.patched(), torch.inference_mode():
        clf(batch[:1])  # warm-up: first calls pay for allocation and kernel choice
        start = time.perf_counter()
        clf(batch)
        return (time.perf_counter() - start) / copies


def estimate(algo: Any, clf: Any, x: torch.Tensor) -> Estimate | None:
    """The cost of ``algo`` on ``x``, or ``None`` where the method cannot tell or the call
    is small (fewer than :data:`MIN_PASSES` passes)."""
    n = algo.passes(clf, x)
    if n is None or n < MIN_PASSES:
        return None
    return Estimate(algo.name, int(n), time_one_pass(clf, x, min(TIMED_COPIES, n)))


@contextmanager
def reporting(reporter: Reporter | None) -> Iterator[None]:
    """Send progress of the calls inside the block to ``reporter(label, done, total)``."""
    token = _reporter.set(reporter)
    try:
        yield
    finally:
        _reporter.reset(token)


@contextmanager
def estimating(sink: Callable[[Estimate], None] | None) -> Iterator[None]:
    """Hand the :class:`Estimate` of each timed call inside the block to ``sink`` before
    the call runs (``mindlens serve`` shows it as the job's expected duration)."""
    token = _estimates.set(sink)
    try:
        yield
    finally:
        _estimates.reset(token)


@contextmanager
def watch(algo: Any, clf: Any, x: torch.Tensor) -> Iterator[Estimate | None]:
    """Estimate the call, warn if it is long, and count its passes for the reporter."""
    est = estimate(algo, clf, x)
    sink = _estimates.get()
    if est is not None and sink is not None:
        sink(est)
    if est is not None and est.seconds > WARN_SECONDS:
        faster = getattr(algo, "faster", "")
        warnings.warn(CostWarning(est.describe() + (f"; faster: {faster}" if faster else "")),
                      stacklevel=3)
    reporter = _reporter.get()
    total = est.passes if est is not None else algo.passes(clf, x)
    if reporter is None or not total:
        yield est
        return
    state = [algo.name, 0, int(total), reporter]
    token = _task.set(state)
    reporter(algo.name, 0, state[2])
    try:
        yield est
        reporter(algo.name, state[2], state[2])
    finally:
        _task.reset(token)


def tick(passes: int = 1) -> None:
    """Count ``passes`` model evaluations done (called by perturbation methods)."""
    state = _task.get()
    if state is None:
        return
    state[1] = min(state[2], state[1] + passes)
    state[3](state[0], state[1], state[2])


def planned_windows(n_windows: int, axes: int, mode: str, coarse: int, refine: float,
                    check_windows: int) -> int:
    """Windows a perturbation call runs per image and target set: all of them (exact,
    incremental), plus the check windows (auto), or for the approximate mode the coarse
    grid, the refined share of the rest and the check windows."""
    if mode == "auto":
        return n_windows + check_windows
    if mode != "approximate":
        return n_windows
    first = math.ceil(n_windows / coarse ** axes)
    return first + math.ceil(refine * (n_windows - first)) + check_windows
