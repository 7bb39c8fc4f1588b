"""The manifest of a resumable run, and the decision it makes: resume, start, or refuse.

A manifest is a JSON object with fixed sections: ``kind`` (which command), ``model`` (see
:func:`~mindlens.runs.fingerprint.model_fingerprint`), ``data`` (one entry per input: its
id and content hash, and the same for its mask where there is one), ``settings`` (the
methods and every parameter), ``mindlens`` (the version). :func:`open_run` writes it
(atomically) when a run starts in an empty folder; when the folder already holds a run, the
same manifest resumes it, and a different one is refused with one line that names the
first difference and the two ways out (``--overwrite``, or another folder).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from .atomic import write_atomic
from .errors import RunConflictError
from .journal import Journal

MANIFEST = "manifest.json"
SECTIONS = ("kind", "mindlens", "model", "data", "settings")


def make_manifest(kind: str, model: dict[str, Any], data: Sequence[dict[str, Any]],
                  settings: dict[str, Any]) -> dict[str, Any]:
    """A manifest from its sections (``data``: one dict per input, with an ``id``)."""
    from .. import __version__

    return json.loads(json.dumps({"kind": kind, "mindlens": __version__, "model": model,
                                  "data": list(data), "settings": settings}))


def _short(v: Any) -> str:
    s = json.dumps(v) if not isinstance(v, str) else v
    if len(s) == 64 and all(c in "0123456789abcdef" for c in s):
        return s[:12]  # a hash: its first 12 hex digits tell two apart
    return s if len(s) <= 40 else s[:37] + "..."


def _first_difference(old: Any, new: Any, path: str) -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in [*old, *(k for k in new if k not in old)]:
            if k not in new:
                return f"{path}{k} is gone"
            if k not in old:
                return f"{path}{k} is new"
            found = _first_difference(old[k], new[k], f"{path}{k}.")
            if found:
                return found
        return None
    if old != new:
        return f"{path.rstrip('.')} was {_short(old)}, now {_short(new)}"
    return None


def difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """What differs between two manifests, in a few words; ``None`` when they agree."""
    for section in SECTIONS:
        a, b = old.get(section), new.get(section)
        if a == b:
            continue
        if section == "model":
            if a and b and a.get("weights_sha256") != b.get("weights_sha256"):
                return (f"another model (weights {_short(a.get('weights_sha256'))} in the "
                        f"folder, {_short(b.get('weights_sha256'))} now)")
            return f"another model card ({_first_difference(a or {}, b or {}, '')})"
        if section == "data":
            a, b = a or [], b or []
            if len(a) != len(b):
                return f"other data ({len(a)} inputs in the folder's run, {len(b)} now)"
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                if x != y:
                    name = y.get("id", f"input {i}")
                    what = "its content" if x.get("id") == y.get("id") else \
                        f"{x.get('id')!r} there"
                    return f"other data (input {i + 1}, {name!r}: {what} differs)"
        if section == "settings":
            return f"other settings ({_first_difference(a or {}, b or {}, '')})"
        return f"another {section} ({_short(a)} in the folder, {_short(b)} now)"
    return None


@dataclass
class Run:
    """An open run folder: its manifest, its journal, and whether it resumed."""

    folder: Path
    manifest: dict[str, Any]
    journal: Journal
    resumed: bool

    def path(self, name: str) -> Path:
        return self.folder / name


def open_run(folder: str | Path, manifest: dict[str, Any], record: str, key: Sequence[str],
             outputs: Sequence[str] = (), overwrite: bool = False) -> Run:
    """Open ``folder`` for the run described by ``manifest``.

    Empty folder (or none): the manifest is written, the journal ``record`` starts empty.
    Same manifest: resume (the journal's rows are loaded, a torn tail repaired). Another
    manifest, or finished work without one: :class:`RunConflictError`. ``overwrite`` always
    starts afresh: it removes the old manifest, journal and ``outputs`` (the final files;
    nothing else in the folder is touched).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} is a file, not a folder: give --out a folder name")
    folder.mkdir(parents=True, exist_ok=True)
    mpath, journal = folder / MANIFEST, Journal(folder / record, key)
    old: dict[str, Any] | None = None
    if mpath.exists():
        try:
            old = json.loads(mpath.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = {"kind": "an unreadable manifest"}
    why = None
    if old is not None:
        why = difference(old, manifest)
    elif journal.path.exists() and journal.path.stat().st_size:
        why = "results but no manifest (written by an older mindlens)"
    if why is not None and not overwrite:
        raise RunConflictError(f"{folder} holds a run with {why}: give --overwrite to "
                               f"replace it, or another --out folder")
    if overwrite:
        for name in (MANIFEST, record, *outputs):
            p = folder / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        old = None
    if old is None:
        journal.path.unlink(missing_ok=True)
        write_atomic(mpath, json.dumps(manifest, indent=1) + "\n")
    rows = journal.load()
    return Run(folder, manifest, journal, resumed=old is not None and bool(rows))
