"""The scan store: a folder other tools read without mindlens.

Layout (``STORE/``)::

    manifest.json        the run (model, inputs with hashes, settings): resume or refuse
    index.jsonl          the journal: one JSON row per finished image, appended per batch
    maps.zarr/           Zarr v3 group, one float16 array per method, shape [N, S, S],
                         one chunk per batch ([batch_size, S, S]); row i = the index's position i
    maps.zarr/native/    with --native: the same maps at the model's input resolution,
                         one float16 array per method, shape [N, H, W], a chunk per batch
    index.parquet        the final index table (written atomically when the scan completes)
    store.json           the layout's description: methods, N, S, batch size, columns

A batch counts as done only when its rows are in ``index.jsonl``; its chunk is written
before them, so a kill leaves at worst a chunk without rows, which the resume rewrites.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..runs import Run, atomic_open, open_run, write_atomic
from .batch import BatchResult, Settings

INDEX_JOURNAL = "index.jsonl"
MAPS = "maps.zarr"
NATIVE = "native"
INDEX = "index.parquet"
LAYOUT = "store.json"
OUTPUTS = (MAPS, INDEX, LAYOUT)
KEY = ("id", "sha256")


def need(module: str, extra: str) -> Any:
    """Import an optional dependency, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"this needs {module}: pip install 'mindlens[{extra}]'") from None


class Store:
    """An open store: :meth:`write` batches, then :meth:`finish`."""

    def __init__(self, run: Run, n: int, settings: Settings,
                 input_size: Sequence[int] = ()) -> None:
        zarr = need("zarr", "store")
        self.run, self.n, self.settings = run, n, settings
        path = run.path(MAPS)
        s, b = settings.size, settings.batch_size
        group = zarr.open_group(str(path), mode="a", zarr_format=3)
        self.arrays = {m: _array(group, m, (n, s, s), b) for m in settings.methods}
        self.native = {}
        if settings.native:
            sub = group.require_group(NATIVE)
            self.native = {m: _array(sub, m, (n, *input_size), b) for m in settings.methods}

    @property
    def done_positions(self) -> set[int]:
        return {int(r["position"]) for r in self.run.journal.rows}

    def write(self, result: BatchResult) -> None:
        """Write a batch's chunk(s), then its rows (the rows make it count)."""
        b = len(result.rows)
        for m, a in result.maps.items():
            self.arrays[m][result.start:result.start + b] = a
        for m, a in result.native.items():
            self.native[m][result.start:result.start + b] = a
        self.run.journal.append(result.rows)

    def finish(self) -> Path:
        """Write the index table and the layout description; return the index's path."""
        pa = need("pyarrow", "store")
        pq = need("pyarrow.parquet", "store")
        rows = sorted(self.run.journal.rows, key=lambda r: r["position"])
        columns = sorted({k for r in rows for k in r}, key=_column_order)
        table = pa.table({c: [r.get(c) for r in rows] for c in columns})
        path = self.run.path(INDEX)
        with atomic_open(path, "wb") as f:
            pq.write_table(table, f)
        layout = {"format": "mindlens scan store 1", "images": self.n,
                  "methods": list(self.settings.methods), "size": self.settings.size,
                  "batch_size": self.settings.batch_size, "maps": f"{MAPS}/<method>",
                  "native_maps": f"{MAPS}/{NATIVE}/<method>" if self.native else None,
                  "index": INDEX, "journal": INDEX_JOURNAL, "columns": columns}
        write_atomic(self.run.path(LAYOUT), json.dumps(layout, indent=1) + "\n")
        return path


def _array(group: Any, name: str, shape: tuple[int, ...], batch: int) -> Any:
    """The float16 array ``name`` of ``group`` (made on the first run: one chunk per
    batch, NaN where no batch has been written)."""
    if name in group:
        return group[name]
    return group.create_array(name, shape=shape, chunks=(batch, *shape[1:]), dtype="float16",
                              fill_value=np.nan)


_FIRST = ("position", "id", "path", "sha256", "label", "predicted", "predicted_name",
          "target", "target_name", "top_classes", "top_probs", "mask")


def _column_order(c: str) -> tuple[int, str]:
    return (_FIRST.index(c), c) if c in _FIRST else (len(_FIRST), c)


def open_store(out: str | Path, manifest: dict[str, Any], n: int, settings: Settings,
               overwrite: bool = False, input_size: Sequence[int] = ()) -> Store:
    """Open (resume, start or refuse: see :func:`mindlens.runs.open_run`) a store;
    ``input_size`` shapes the native-resolution arrays (``settings.native``)."""
    run = open_run(out, manifest, INDEX_JOURNAL, KEY, OUTPUTS, overwrite)
    return Store(run, n, settings, input_size)


def read_index(store: str | Path) -> list[dict[str, Any]]:
    """The index rows of a store, in position order (the final table, else the journal)."""
    store = Path(store)
    if (store / INDEX).exists():
        pq = need("pyarrow.parquet", "store")
        return pq.read_table(store / INDEX).to_pylist()
    if not (store / INDEX_JOURNAL).exists():
        raise InputError(f"{store} is not a scan store (no {INDEX} or {INDEX_JOURNAL})")
    from ..runs import Journal

    return sorted(Journal(store / INDEX_JOURNAL, KEY).load(), key=lambda r: r["position"])


def read_maps(store: str | Path, method: str, positions: Sequence[int] | None = None,
              native: bool = False) -> np.ndarray:
    """The float16 maps ``[n, S, S]`` of one method (all, or the given positions);
    ``native=True``: the maps at the input resolution ``[n, H, W]`` (a ``--native`` scan)."""
    zarr = need("zarr", "store")
    group = zarr.open_group(str(Path(store) / MAPS), mode="r")
    if native:
        if NATIVE not in group:
            raise InputError(f"{store} has no native-resolution maps: scan with --native "
                             f"(native=True) to keep them")
        group = group[NATIVE]
    if method not in group:
        names = sorted(k for k in group if k != NATIVE)
        raise InputError(f"{store} has no maps of {method!r}; it has {names}")
    a = group[method]
    return a[:] if positions is None else a.oindex[np.asarray(positions, dtype=np.int64)]
