"""Where the batches run. ``local``: this process, with loader threads decoding the next
batches while the model works on the current one. ``ray``: Ray actors, each holding the
model once (see :mod:`.ray_engine`). Both call :func:`.batch.explain_batch` and hand the
results to the same :class:`.store.Store`, in any order: the store places them by position.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from ..model import Classifier
from .batch import BatchResult, Settings, algorithms, explain_batch, load_pixels
from .items import Item

Batch = tuple[int, list[Item]]


@dataclass
class ScanStatus:
    """What a progress callback sees after each batch."""

    done: int
    total: int
    seconds: float
    worker_pids: list[int] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


Progress = Callable[[ScanStatus], None]


def plan(items: Sequence[Item], batch_size: int, done: set[int]) -> list[Batch]:
    """The batches still to do: fixed slices ``[s, s + batch_size)`` (one store chunk each)
    that hold an image without a journal row."""
    out = []
    for s in range(0, len(items), batch_size):
        chunk = range(s, min(s + batch_size, len(items)))
        if any(i not in done for i in chunk):
            out.append((s, list(items[s:chunk.stop])))
    return out


def run_local(clf: Classifier, settings: Settings, batches: Sequence[Batch],
              loader_threads: int = 4, prefetch: int = 2) -> Iterator[BatchResult]:
    """Explain ``batches`` in this process; decoding runs ``prefetch`` batches ahead in
    ``loader_threads`` threads."""
    algos = algorithms(settings)
    with ThreadPoolExecutor(max(1, loader_threads)) as pool:
        queued: list[list[Future[torch.Tensor]]] = []

        def submit(k: int) -> None:
            if k < len(batches):
                queued.append([pool.submit(load_pixels, clf, it) for it in batches[k][1]])

        for k in range(prefetch):
            submit(k)
        for k, (start, items) in enumerate(batches):
            futures = queued.pop(0)
            submit(k + prefetch)
            x = torch.cat([f.result() for f in futures]).to(device=clf.device,
                                                             dtype=clf.dtype)
            yield explain_batch(clf, algos, settings, start, items, x)


def drive(results: Iterator[BatchResult], write: Callable[[BatchResult], None],
          done: int, total: int, progress: Progress | None, pids: Callable[[], list[int]]
          ) -> int:
    """Write each result in order while the next batch is explained (one writer thread,
    one write in flight: the store's chunk, rows and fsync cost the model no time); report
    progress after each write; return how many images were done. A failure on either side
    stops the scan after the write in flight has finished, so the journal stays whole."""
    start, new = time.perf_counter(), 0

    def written(n: int) -> None:
        nonlocal new
        new += n
        if progress is not None:
            progress(ScanStatus(done + new, total, time.perf_counter() - start, pids()))

    def store(result: BatchResult) -> int:
        write(result)
        return len(result.rows)

    with ThreadPoolExecutor(1, thread_name_prefix="mindlens-store") as writer:
        pending: Future[int] | None = None
        for result in results:
            if pending is not None:
                written(pending.result())
            pending = writer.submit(store, result)
        if pending is not None:
            written(pending.result())
    return new


def own_pid() -> list[int]:
    return [os.getpid()]
