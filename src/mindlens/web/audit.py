"""The audits ``mindlens serve --audit`` shows: each one a folder written by ``mindlens
audit`` (read back with :func:`mindlens.spray.read_audit`) or a scan store, audited here
with :func:`mindlens.audit` (one audit per method of the store), in the background, one
at a time, and kept in memory. The numbers all come from :mod:`mindlens.spray`; this
module only looks them up and shapes them for the page. Images are addressed by their
position in the store's index, never by a path from the client.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import InputError, MindlensError

#: pictures of images kept rendered (PNG bytes), the most recently used
PICTURE_CACHE = 256
SIZES = (32, 640)


class NotReady(Exception):
    """The audit is still being computed (HTTP 503, retry in a moment)."""


class Failed(Exception):
    """The audit could not be read or computed (HTTP 500, with the reason in words)."""


class Unknown(KeyError):
    """No such audit, class, strategy or image (HTTP 404); the message says what exists."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class Served:
    """One served audit: where it comes from, its state and, once ready, the result."""

    name: str
    source: Path
    kind: str  # "audit" (a folder of `mindlens audit`) or "store" (audited here)
    method: str | None
    state: str = "waiting"  # waiting, queued, computing, ready, error
    error: str | None = None
    result: dict[str, Any] | None = None
    labels: list[str] | None = None  # the model's class names (the store's manifest)
    where: dict[int, tuple[str, int]] = field(default_factory=dict)  # position -> class, row
    started: float | None = None
    seconds: float | None = None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "source": str(self.source), "kind": self.kind,
                               "method": self.method, "state": self.state,
                               "error": self.error}
        if self.state == "computing" and self.started is not None:
            out["elapsed_s"] = round(time.monotonic() - self.started, 1)
        if self.result is not None:
            r = self.result
            out.update(images=r["images"], parameters=r["parameters"], skipped=r["skipped"],
                       seconds=self.seconds,
                       classes=[{"name": cls, "images": c["images"], "k": c["k"],
                                 "flags": c["flags"]} for cls, c in r["classes"].items()])
        return out


def _title(method: str | None) -> str | None:
    from .. import methods

    try:
        return methods.get(method).title if method else None
    except MindlensError:  # a method this version lacks
        return method


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "audit"


def discover(paths: Sequence[str | Path]) -> list[Served]:
    """The audits of ``--audit`` paths: an audit folder (``audit.json``) is one; a finished
    scan store is one per method. Anything else is refused, saying what was expected."""
    from ..scans.store import INDEX_JOURNAL, LAYOUT
    from ..spray.read import AUDIT_JSON

    found: list[Served] = []
    for p in map(Path, paths):
        if (p / AUDIT_JSON).is_file():
            found.append(Served(_slug(p.resolve().name), p, "audit", None))
        elif (p / LAYOUT).is_file():
            methods = json.loads((p / LAYOUT).read_text(encoding="utf-8"))["methods"]
            for m in methods:
                name = p.resolve().name + (f"-{m}" if len(methods) > 1 else "")
                found.append(Served(_slug(name), p, "store", m))
        elif (p / INDEX_JOURNAL).is_file():
            raise InputError(f"--audit {p}: the scan into this store has not finished (no "
                             f"{LAYOUT}); run the same `mindlens scan` again to complete it")
        else:
            raise InputError(f"--audit {p}: neither a scan store (no {LAYOUT}) nor an audit "
                             f"folder (no {AUDIT_JSON}); give what `mindlens scan --out` or "
                             f"`mindlens audit --out` wrote")
    names: set[str] = set()
    for s in found:  # unique names: a second "store" becomes "store_2"
        base, i = s.name, 1
        while s.name in names:
            i += 1
            s.name = f"{base}_{i}"
        names.add(s.name)
    return found


class Audits:
    """The served audits: computed or read in one background thread, then looked up."""

    def __init__(self, paths: Sequence[str | Path], max_pixels: int | None = None,
                 region: str = "region") -> None:
        self.audits = {s.name: s for s in discover(paths)}
        self.max_pixels = max_pixels
        self.region = region  # what the masks mark, for the flags of stores audited here
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mindlens-audit")
        self._pictures: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.Lock()

    def start(self) -> None:
        """Read or compute every audit, one after the other, in the background."""
        for s in self.audits.values():
            if s.state == "waiting":
                s.state = "queued"
                self._pool.submit(self._load, s)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _load(self, s: Served) -> None:
        from ..spray import audit, read_audit

        s.state, s.started = "computing", time.monotonic()
        try:
            r = read_audit(s.source) if s.kind == "audit" else audit(
                s.source, method=s.method, region=self.region)
            manifest = Path(r["store"]) / "manifest.json"
            model = json.loads(manifest.read_text(encoding="utf-8")).get("model", {}) \
                if manifest.is_file() else {}
            s.labels = model.get("labels")
            s.method = r["method"]
            s.where = {int(row["position"]): (cls, j) for cls, c in r["classes"].items()
                       for j, row in enumerate(c["rows"])}
            s.result, s.state = r, "ready"
        except MindlensError as e:  # shown to the page as the audit's state
            s.error, s.state = str(e), "error"
        except Exception as e:  # e.g. a damaged store: said in one line, not a traceback
            s.error, s.state = f"{type(e).__name__}: {e}", "error"
        s.seconds = round(time.monotonic() - s.started, 2)

    # -- look-ups (raise Unknown, NotReady or Failed) ----------------------------------------
    def get(self, name: str) -> Served:
        if name not in self.audits:
            raise Unknown(f"no served audit is named {name!r}; served: "
                          f"{', '.join(self.audits) or 'none'} (GET /api/audits)")
        return self.audits[name]

    def ready(self, name: str) -> tuple[Served, dict[str, Any]]:
        s = self.get(name)
        if s.state == "error":
            raise Failed(f"the audit {name!r} of {s.source} failed: {s.error}")
        if s.result is None:
            raise NotReady(f"the audit {name!r} is still being computed ({s.state})")
        return s, s.result

    def klass(self, name: str, cls: str) -> tuple[Served, dict[str, Any]]:
        s, r = self.ready(name)
        if cls not in r["classes"]:
            why = f" (not audited: {r['skipped'][cls]})" if cls in r["skipped"] else ""
            raise Unknown(f"the audit {name!r} has no class {cls!r}{why}; audited: "
                          f"{', '.join(r['classes']) or 'none'}")
        return s, r["classes"][cls]

    def image(self, name: str, position: int) -> tuple[Served, str, int]:
        """An audited image: its audit, class and row number in the class."""
        s, _ = self.ready(name)
        if position not in s.where:
            raise Unknown(f"the audit {name!r} has no image at position {position} (the "
                          f"positions are listed by GET /api/audits/{name}/classes/{{class}})")
        cls, j = s.where[position]
        return s, cls, j

    # -- views -----------------------------------------------------------------------------
    def class_view(self, name: str, cls: str) -> dict[str, Any]:
        """A class: its figures, its strategies and the 2-D picture's points."""
        from ..spray.pictures import cluster_colour

        s, c = self.klass(name, cls)
        rows, labels = c["rows"], c["labels"]
        here = f"/api/audits/{name}/classes/{quote(cls, safe='/')}"
        emb = c["embedding_2d"]
        points = [{"position": int(rows[j]["position"]), "id": rows[j]["id"],
                   "x": xy[0], "y": xy[1], "cluster": labels[j]}
                  for j, xy in zip(emb["positions"], emb["xy"], strict=True)]
        figures = ("size", "share", "where", "fixed_location", "consistency", "border",
                   "in_mask", "labels", "accuracy", "mean_probability", "flags")
        clusters = [{"index": i, "colour": cluster_colour(i),
                     **{k: cl[k] for k in figures},
                     "typical": [{"position": int(rows[j]["position"]), "id": rows[j]["id"]}
                                 for j in cl["typical"]],
                     "mean_map": f"{here}/mean.png?cluster={i}"}
                    for i, cl in enumerate(c["clusters"])]
        keys = ("images", "eigenvalues", "k", "gap_ratio", "near_zero", "clear_gap", "note",
                "in_mask", "flags")
        return {"audit": name, "class": cls, "method": s.method,
                "method_title": _title(s.method), **{k: c[k] for k in keys},
                "called": c.get("called", True),
                "mean_map": f"{here}/mean.png",
                "points": points, "shown": len(points), "clusters": clusters}

    def cluster_view(self, name: str, cls: str, k: int) -> dict[str, Any]:
        """One strategy with all its members (position and id)."""
        view = self.class_view(name, cls)
        if not 0 <= k < len(view["clusters"]):
            raise Unknown(f"the class {cls!r} of the audit {name!r} has strategies "
                          f"0..{len(view['clusters']) - 1}, not {k}")
        _, c = self.klass(name, cls)
        rows = c["rows"]
        members = [{"position": int(r["position"]), "id": r["id"]}
                   for r, lab in zip(rows, c["labels"], strict=True) if lab == k]
        return {"audit": name, "class": cls, "called": view["called"], **view["clusters"][k],
                "members": members}

    def row_view(self, name: str, position: int) -> dict[str, Any]:
        """An image's index row, in words: label, decision, top classes, inside the marks,
        its strategy."""
        s, cls, j = self.image(name, position)
        c = self.ready(name)[1]["classes"][cls]
        row = c["rows"][j]
        k = c["labels"][j]

        def label(i: int) -> str:
            return s.labels[i] if s.labels and 0 <= i < len(s.labels) else str(i)

        return {"audit": name, "position": position, "id": row["id"], "class": cls,
                "label": row.get("label"), "predicted": row["predicted"],
                "predicted_name": row["predicted_name"],
                "top": [{"index": int(i), "label": label(int(i)), "probability": float(p)}
                        for i, p in zip(row["top_classes"], row["top_probs"], strict=True)],
                "has_mask": bool(row.get("mask")), "method": s.method,
                "method_title": _title(s.method),
                "in_mask": row.get(f"in_mask_{s.method}"), "cluster": k,
                "cluster_flags": c["clusters"][k]["flags"],
                "picture": f"/api/audits/{name}/images/{position}.png"}

    # -- pictures --------------------------------------------------------------------------
    def _cached(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._pictures:
                self._pictures.move_to_end(key)
                return self._pictures[key]
        made = make()
        with self._lock:
            self._pictures[key] = made
            while len(self._pictures) > PICTURE_CACHE:
                self._pictures.popitem(last=False)
        return made

    def picture(self, name: str, position: int, overlay: bool = True, size: int = 320
                ) -> tuple[bytes, str | None]:
        """An image as PNG, its map laid over (``overlay``), the expert's marks outlined;
        and the name of the marks' colour (``None`` without marks)."""
        from ..render.overlay import png_bytes
        from ..scans.store import read_maps
        from ..spray.pictures import image_picture

        if not SIZES[0] <= size <= SIZES[1]:
            raise InputError(f"size must be in {SIZES[0]}..{SIZES[1]} pixels, got {size}")
        _, cls, j = self.image(name, position)
        r = self.ready(name)[1]
        row = r["classes"][cls]["rows"][j]

        def make() -> tuple[bytes, str | None]:
            m = read_maps(r["store"], r["method"], [position])[0] if overlay else None
            pic = image_picture(row["path"], m, size, row.get("mask"), self.max_pixels)
            return png_bytes(pic.pixels), pic.marks_colour

        return self._cached((name, position, overlay, size), make)

    def mean_picture(self, name: str, cls: str, cluster: int | None = None) -> bytes:
        """The mean map of a class, or of one of its strategies, as PNG."""
        from ..render.overlay import png_bytes
        from ..spray.pictures import map_pixels

        _, c = self.klass(name, cls)
        if cluster is not None and not 0 <= cluster < len(c["clusters"]):
            raise Unknown(f"the class {cls!r} of the audit {name!r} has strategies "
                          f"0..{len(c['clusters']) - 1}, not {cluster}")
        m = c["mean_map"] if cluster is None else c["clusters"][cluster]["mean_map"]
        return self._cached((name, cls, "mean", cluster),
                            lambda: png_bytes(map_pixels(m), upscale_to=160))
