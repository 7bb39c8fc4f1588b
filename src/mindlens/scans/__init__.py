"""``mindlens.scan``: explain every image of a folder or CSV list into a resumable store
(see :mod:`.store` for the layout), on this machine or on a Ray cluster.

>>> mindlens.scan("model.json", "images/", ["gradcam"], "store/")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..model import Classifier
from ..model_card import load_model
from ..runs import make_manifest, model_fingerprint
from .batch import BatchResult, Settings, explain_batch
from .engines import ScanStatus, drive, own_pid, plan, run_local
from .items import Item, collect
from .store import Store, open_store, read_index, read_maps

ENGINES = ("local", "ray")

__all__ = ["ENGINES", "BatchResult", "Item", "ScanResult", "ScanStatus", "Settings", "Store",
           "collect", "explain_batch", "read_index", "read_maps", "scan"]


@dataclass
class ScanResult:
    """A finished scan: the store folder, its index file, how many images it holds, how
    many this call computed, and whether it resumed an earlier run."""

    store: Path
    index: Path
    images: int
    computed: int
    resumed: bool


def scan(model: Classifier | str | Path, data: str | Path | Sequence[Item],
         methods: Sequence[str], out: str | Path, *, masks: str | Path | None = None,
         target: str | int = "predicted", size: int = 64, top_k: int = 3,
         batch_size: int = 16, native: bool = False,
         params: Mapping[str, Mapping[str, Any]] | None = None,
         engine: str = "local", address: str | None = None, workers: int = 2,
         loader_threads: int = 4, overwrite: bool = False,
         progress: Any = None) -> ScanResult:
    """Explain every image of ``data`` with each of ``methods`` into the store ``out``.

    ``model``: a :class:`Classifier` or a model card path (a card is what Ray actors load).
    ``data``: a folder (sub-folders name the labels) or a CSV list (``path``, ``label``,
    ``mask`` columns), or ready :class:`Item` objects. ``target``: ``"predicted"``,
    ``"label"`` or a class index. ``size``: the analysis resolution of the stored maps.
    ``batch_size``: images per batch and per store chunk. ``native``: also keep every map
    at the model's input resolution (float16, ``maps.zarr/native/<method>``).
    ``engine``: ``"local"`` or ``"ray"`` (``address`` of a running cluster, else a local
    one with ``workers`` actors). A folder holding the same run resumes it; another run is
    refused unless ``overwrite``. ``progress(status: ScanStatus)`` is called after each
    batch.
    """
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {ENGINES}, got {engine!r}")
    if not methods:
        raise InputError("give at least one method")
    if size < 1 or batch_size < 1 or top_k < 1:
        raise InputError("size, batch_size and top_k must be positive")
    if isinstance(target, str) and target not in ("predicted", "label"):
        if not target.isdigit():
            raise InputError(f"target must be 'predicted', 'label' or a class index, got "
                             f"{target!r}")
        target = int(target)
    clf = load_model(model) if isinstance(model, (str, Path)) else model
    from .. import methods as registry

    for m in methods:
        registry.get(m)
    items = list(data) if not isinstance(data, (str, Path)) else collect(data, masks)
    settings = Settings(tuple(methods), {m: dict((params or {}).get(m, {})) for m in methods},
                        target, size, top_k, batch_size, native)
    manifest = make_manifest(
        "scan", model_fingerprint(clf),
        [{"id": it.id, "sha256": it.sha256, "label": it.label,
          "mask": it.mask and Path(it.mask).name} for it in items],
        settings.describe())
    store = open_store(out, manifest, len(items), settings, overwrite, clf.input_size)
    done = store.done_positions
    batches = plan(items, batch_size, done)
    if engine == "local":
        new = drive(run_local(clf, settings, batches, loader_threads), store.write,
                    len(done), len(items), progress, own_pid)
    else:
        from .ray_engine import RayEngine

        ray_engine = RayEngine(model if isinstance(model, (str, Path)) else clf, settings,
                               workers, address)
        try:
            new = drive(ray_engine.run(batches), store.write, len(done), len(items),
                        progress, lambda: ray_engine.pids)
        finally:
            ray_engine.close()
    index = store.finish()
    return ScanResult(Path(out), index, len(items), new, store.run.resumed)
