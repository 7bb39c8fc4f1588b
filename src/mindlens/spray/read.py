"""Read a written audit back: ``audit.json`` with the arrays it leaves out (the per-image
rows, the mean maps, the typical images' maps) taken again from its scan store, so the
result equals what :func:`mindlens.audit` returned when it wrote the folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..scans.store import LAYOUT, read_index, read_maps
from . import location
from .audit import class_positions

AUDIT_JSON = "audit.json"


def _store_of(recorded: str, folder: Path) -> Path:
    """The store an audit names: as recorded (absolute, or relative to where it ran), else
    relative to the audit folder, else the folder's parent (an audit written inside it)."""
    given = Path(recorded)
    for candidate in (given, folder / given, folder.parent):
        if (candidate / LAYOUT).is_file():
            return candidate
    raise InputError(f"the audit in {folder} was made from the store {recorded}, which is "
                     f"not there any more; run `mindlens audit STORE --out {folder}` again")


def read_audit(path: str | Path, store: str | Path | None = None) -> dict[str, Any]:
    """The audit in ``path`` (a folder holding ``audit.json``, or the file), completed
    from its store (default: the one ``audit.json`` names). Refuses, saying so, when the
    store no longer holds the images the audit clustered."""
    path = Path(path)
    file = path / AUDIT_JSON if path.is_dir() else path
    if not file.is_file():
        raise InputError(f"{path} holds no {AUDIT_JSON}; write one with `mindlens audit "
                         f"STORE --out {path}`")
    try:
        result = json.loads(file.read_text(encoding="utf-8"))
        recorded, method = result["store"], result["method"]
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{file} is not an audit written by `mindlens audit` ({e})") from None
    src = Path(store) if store is not None else _store_of(recorded, file.parent)
    rows = read_index(src)
    by_class = class_positions(rows)
    for cls, c in result["classes"].items():
        mine = [rows[i] for i in by_class.get(cls, [])]
        ids = {m["id"] for cl in c["clusters"] for m in cl["members"]}
        if len(mine) != c["images"] or {r["id"] for r in mine} != ids:
            raise InputError(f"the store {src} changed since the audit in {file.parent} (class "
                             f"{cls!r}: {len(mine)} images now, {c['images']} audited); run "
                             f"`mindlens audit` again")
        maps = read_maps(src, method, [r["position"] for r in mine]).astype(np.float32)
        labels = np.asarray(c["labels"])
        c["rows"] = mine
        c["mean_map"] = location.mean_map(maps)
        for i, cl in enumerate(c["clusters"]):
            cl["mean_map"] = location.mean_map(maps[labels == i])
            cl["typical_maps"] = maps[cl["typical"]]
    result["store"] = str(src)  # where the maps were read now
    return result
