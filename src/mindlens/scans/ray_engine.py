"""The Ray engine: ``workers`` actors, each loading the model once, explain batches with
the same :func:`~mindlens.scans.batch.explain_batch` as the local engine; the driver writes
every result to the store. An actor that dies (a killed process, a lost node) is restarted
by Ray and its batch retried (``max_restarts``/``max_task_retries``); a batch is recorded
only when its result reaches the driver, so nothing is lost or written twice.

The image paths must be readable from every node (a shared file system), and the model card
(or, for a :class:`Classifier` object, its pickle) is shipped to each actor.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from .batch import BatchResult, Settings
from .engines import Batch


class _Worker:
    """One actor: the model and the method objects, built once."""

    def __init__(self, model: Any, settings: Settings, threads: int) -> None:
        import torch

        from ..model_card import load_model
        from .batch import algorithms

        torch.set_num_threads(threads)
        self.clf = load_model(model) if isinstance(model, (str, Path)) else model
        self.settings = settings
        self.algos = algorithms(settings)

    def pid(self) -> int:
        return os.getpid()

    def run(self, start: int, items: list[Any]) -> BatchResult:
        import torch

        from .batch import explain_batch, load_pixels

        x = torch.cat([load_pixels(self.clf, it) for it in items])
        return explain_batch(self.clf, self.algos, self.settings, start, items, x)


class RayEngine:
    """Start (or join, with ``address``) a Ray cluster and hold ``workers`` actors."""

    def __init__(self, model: Any, settings: Settings, workers: int = 2,
                 address: str | None = None, threads: int = 1, retries: int = 3) -> None:
        from .store import need

        ray = need("ray", "ray")
        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        actor = ray.remote(num_cpus=threads, max_restarts=retries,
                           max_task_retries=retries)(_Worker)
        shared = model if isinstance(model, (str, Path)) else ray.put(model)
        self.actors = [actor.remote(shared, settings, threads) for _ in range(workers)]
        self.pids: list[int] = []
        self.refresh_pids()

    def refresh_pids(self) -> list[int]:
        self.pids = self.ray.get([a.pid.remote() for a in self.actors], timeout=120)
        return self.pids

    def run(self, batches: Sequence[Batch]) -> Iterator[BatchResult]:
        """Results as they finish, at most two batches queued per actor."""
        ray = self.ray
        todo = list(batches)
        inflight: dict[Any, int] = {}
        k = 0
        while todo or inflight:
            while todo and len(inflight) < 2 * len(self.actors):
                start, items = todo.pop(0)
                ref = self.actors[k % len(self.actors)].run.remote(start, items)
                inflight[ref] = start
                k += 1
            ready, _ = ray.wait(list(inflight), num_returns=1)
            start = inflight.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayError as e:  # retries spent, or the actor cannot start
                lines = [ln for ln in str(e).splitlines() if ln.strip()]
                raise InputError(f"the batch at image {start} failed on Ray after "
                                 f"retries: {lines[-1] if lines else type(e).__name__} "
                                 f"(can every worker import the model's code and read "
                                 f"the images?)") from None
            yield result

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
