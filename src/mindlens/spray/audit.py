"""``mindlens.audit``: the strategies of a model across a scan store, per class (SpRAy,
:mod:`.spray`), where each strategy's evidence sits (:mod:`.location`), and flags in plain
words; written as ``audit.json`` and a self-contained ``audit.html``."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..runs import write_atomic
from ..scans.store import LAYOUT, read_index, read_maps
from . import location
from .spray import spray, tsne

TYPICAL = 8


def _called(rows: list[dict[str, Any]]) -> bool:
    """Whether every map of a class explains the class the model predicted (the flags then
    say the images "called" it; where a scan fixed the class, ``--target``, they were
    "explained for" it)."""
    return all(r.get("target") == r.get("predicted") for r in rows)


def _who(cls: str, rows: list[dict[str, Any]]) -> str:
    """How the flags name a class's images."""
    return f"the images {'called' if _called(rows) else 'explained for'} '{cls}'"


def _flag(who: str, share: float, loc: dict[str, Any], in_mask: float | None,
          region: str) -> str | None:
    if not loc["fixed"]:
        return None
    place = (f"at a fixed place, the {loc['where']}" if loc["where"] != location.SPREAD
             else f"at the same places in every image, {location.SPREAD}")
    text = f"In {100 * share:.0f}% of {who} the evidence sits {place}"
    if in_mask is not None and in_mask < 0.2:
        text += f", where no {region} is marked ({100 * in_mask:.0f}% of it inside the marks)"
    return text + "."


def _cluster(who: str, n: int, members: np.ndarray, rows: list[dict[str, Any]],
             maps: np.ndarray, embedding: np.ndarray, k: int, method: str,
             region: str) -> dict[str, Any]:
    sub = maps[members]
    loc = location.describe(sub)
    marks = [rows[i].get(f"in_mask_{method}") for i in members]
    marks = [m for m in marks if m is not None]
    in_mask = float(np.mean(marks)) if marks else None
    emb = embedding[members, :max(k, 1)]
    typical = members[np.argsort(((emb - emb.mean(0)) ** 2).sum(1), kind="stable")[:TYPICAL]]
    labelled = [rows[i] for i in members if rows[i].get("label") is not None]
    flag = _flag(who, len(members) / n, loc, in_mask, region)
    return {
        "size": len(members), "share": len(members) / n,
        "border": loc["border"], "consistency": loc["consistency"], "where": loc["where"],
        "fixed_location": bool(loc["fixed"]), "in_mask": in_mask,
        "labels": dict(Counter(str(r["label"]) for r in labelled)),
        "accuracy": (float(np.mean([r["label"] == r["predicted_name"] for r in labelled]))
                     if labelled else None),
        "mean_probability": float(np.mean([rows[i]["top_probs"][0] for i in members])),
        "typical": [int(i) for i in typical],
        "members": [{"id": rows[i]["id"], "path": rows[i]["path"]} for i in members],
        "flags": [flag] if flag else [],
        "mean_map": location.mean_map(sub),
        "typical_maps": maps[typical],
    }


def audit_class(cls: str, rows: list[dict[str, Any]], maps: np.ndarray, method: str,
                k_neighbours: int = 10, q: int = 32, n_clusters: int | None = None,
                region: str = "region", seed: int = 0, embed_max: int = 1500
                ) -> dict[str, Any]:
    """SpRAy and the location analysis of one class's maps ``[N, S, S]``."""
    n = len(rows)
    res = spray(maps, k_neighbours, q, n_clusters, seed=seed)
    k = int(res.labels.max()) + 1
    who = _who(cls, rows)
    clusters = [_cluster(who, n, np.flatnonzero(res.labels == c), rows, maps, res.embedding,
                         k, method, region) for c in range(k)]
    shown = np.arange(n)
    if n > embed_max:
        shown = np.sort(np.random.default_rng(seed).choice(n, embed_max, replace=False))
    xy = tsne(res.embedding[shown], seed)
    marks = [r.get(f"in_mask_{method}") for r in rows]
    marks = [m for m in marks if m is not None]
    note = None if res.gap.clear else (f"no eigengap stands out (ratio {res.gap.ratio:.1f} "
                                       f"< 2): the {k} clusters are a suggestion only")
    if n < 50:
        note = (note + "; " if note else "") + f"only {n} images: the spectrum is unstable"
    return {
        "images": n, "who": who, "called": _called(rows),
        "eigenvalues": [float(v) for v in res.eigenvalues],
        "k": k, "gap_ratio": res.gap.ratio if np.isfinite(res.gap.ratio) else None,
        "near_zero": res.gap.near_zero,
        "clear_gap": res.gap.clear, "note": note,
        "in_mask": float(np.mean(marks)) if marks else None,
        "mean_map": location.mean_map(maps),
        "clusters": clusters, "labels": [int(v) for v in res.labels],
        "embedding_2d": {"positions": [int(i) for i in shown],
                         "xy": [[float(a), float(b)] for a, b in xy]},
        "flags": [f for c in clusters for f in c["flags"]],
        "rows": rows,
    }


def class_positions(rows: Sequence[dict[str, Any]]) -> dict[str, list[int]]:
    """The index rows of each explained class (``target_name``), in index order: the
    order of a class's ``rows``, ``labels`` and embedding positions in the audit."""
    by_class: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_class.setdefault(str(r["target_name"]), []).append(i)
    return by_class


def audit(store: str | Path, out: str | Path | None = None, method: str | None = None,
          classes: Sequence[str] | None = None, k_neighbours: int = 10, q: int = 32,
          n_clusters: int | None = None, min_images: int = 10, region: str = "region",
          seed: int = 0) -> dict[str, Any]:
    """Audit a scan store: per explained class (the index's ``target_name``), SpRAy on
    one method's maps (default: the store's first), the clusters' sizes, mean maps,
    typical images, location figures and flags. With ``out``, write ``audit.json`` and
    ``audit.html`` there. Returns the audit as a dict (``audit.json``'s content)."""
    store = Path(store)
    layout_path = store / LAYOUT
    if not layout_path.exists():
        raise InputError(f"{store} is not a finished scan store (no {LAYOUT}); run "
                         f"`mindlens scan` to the end first")
    layout = json.loads(layout_path.read_text(encoding="utf-8"))
    method = method or layout["methods"][0]
    if method not in layout["methods"]:
        raise InputError(f"{store} has no maps of {method!r}; it has {layout['methods']}")
    rows = read_index(store)
    by_class = class_positions(rows)
    wanted = list(classes) if classes else sorted(by_class)
    unknown = [c for c in wanted if c not in by_class]
    if unknown:
        raise InputError(f"no image of the store is explained for {unknown}; classes there: "
                         f"{sorted(by_class)}")
    result: dict[str, Any] = {
        "store": str(store), "method": method, "images": len(rows),
        "parameters": {"reduction": "sum", "pooling": "sum to <= 32x32",
                       "normalisation": "l1_abs", "distance": "euclidean",
                       "affinity": f"symmetric kNN, k = {k_neighbours}", "q": q,
                       "clustering": "k-means on the first k* eigenvectors (NJW), n_init 10",
                       "seed": seed, "analysis_size": layout["size"],
                       "fixed_location_consistency": location.FIXED},
        "classes": {}, "skipped": {},
    }
    for cls in wanted:
        idx = by_class[cls]
        if len(idx) < min_images:
            result["skipped"][cls] = f"{len(idx)} images (< {min_images})"
            continue
        maps = read_maps(store, method, [rows[i]["position"] for i in idx]).astype(np.float32)
        result["classes"][cls] = audit_class(cls, [rows[i] for i in idx], maps, method,
                                             k_neighbours, q, n_clusters, region, seed)
    if out is not None:
        from .html import write_html

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "audit.json", json.dumps(to_json(result), indent=1) + "\n")
        write_html(result, out / "audit.html")
    return result


def to_json(result: dict[str, Any]) -> dict[str, Any]:
    """``audit.json``: the audit without arrays and per-image rows."""
    out = {k: v for k, v in result.items() if k != "classes"}
    out["classes"] = {}
    for cls, c in result["classes"].items():
        out["classes"][cls] = {
            **{k: v for k, v in c.items() if k not in ("mean_map", "rows", "clusters")},
            "clusters": [{k: v for k, v in cl.items() if k not in ("mean_map", "typical_maps")}
                         for cl in c["clusters"]]}
    return out
