"""The criteria table as a self-contained HTML page, with a recommendation in plain words
for each use case."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from . import methods
from .metrics.criteria import CRITERIA, THRESHOLDS, CriteriaTable

RANK = {"++": 3, "+": 2, "0": 1, "-": 0}

#: use case -> (criterion deciding it, plain-language framing)
USE_CASES = {
    "Fine structures (small lesions, thin lines)": (
        "degree of detail", "it resolves the finest detail on this model"),
    "Several objects in one image": (
        "class discrimination", "its map changes most with the class asked about"),
    "A non-expert audience": (
        "intuitive interpretability", "its maps point at what the expert marked (or are the "
        "most focused, where no marks were given)"),
    "Real time": ("real-time capability", "it is the fastest on this machine"),
}


def _best(rows: list[dict[str, Any]], criterion: str) -> dict[str, Any]:
    """The best row for a criterion (ties broken by the sanity check, then the figure)."""

    def key(r: dict[str, Any]) -> tuple:
        sane = r["figures"].get("sanity_check") != "fail"
        value = r["measured"][criterion]["value"]
        value = float(value) if isinstance(value, (int, float)) else 0.0
        value = -math.inf if math.isnan(value) else value
        sign = -1.0 if THRESHOLDS[criterion].lower_is_better else 1.0
        return (RANK.get(r["grades"][criterion], 0), sane, sign * value)

    return max(rows, key=key)


def best_method(table: CriteriaTable, criterion: str) -> str | None:
    """The name of the method an evaluation recommends for ``criterion`` (None when no
    method ran)."""
    rows = [r for r in table.rows if r["status"] == "ok"]
    return _best(rows, criterion)["method"] if rows else None


def recommendations(table: CriteriaTable) -> list[tuple[str, str]]:
    """One sentence per use case, from the grades (ties broken by the sanity check and then
    by robustness)."""
    rows = [r for r in table.rows if r["status"] == "ok"]
    out = []
    for case, (criterion, why) in USE_CASES.items():
        if not rows:
            out.append((case, "No method could run on this model."))
            continue
        best = _best(rows, criterion)
        title = methods.get(best["method"]).title
        grade = best["grades"][criterion]
        if RANK.get(grade, 0) <= RANK["0"]:
            text = (f"No method does well here (best grade {grade}); the least bad is "
                    f"{title}: {why}.")
        else:
            text = f"Use {title}: {why} (grade {grade})."
        if best["figures"].get("sanity_check") == "fail":
            text += (" Caution: its maps barely change when the model's weights are "
                     "randomised, so they may show the image more than the model.")
        out.append((case, text))
    return out


def localization(table: CriteriaTable, region: str = "the expert's mask",
                 subjects: str = "images with a mask") -> dict[str, Any]:
    """The localisation section: per method the pointing-game hit rate and the relevance
    mass accuracy on the masks, each with a sentence in plain words, best first, and the
    chance levels; empty rows when no image had a mask."""
    rows = []
    for r in table.rows:
        f = r.get("figures", {})
        if r["status"] != "ok" or not f.get("images_with_mask"):
            continue
        title = methods.get(r["method"]).title if r["method"] in methods.names() else r["method"]
        hit, mass = f["pointing_game"], f["relevance_mass"]
        tol = f.get("pointing_tolerance_px", 0)
        near = f"within {tol:g} px of {region}" if tol else f"on {region}"
        owner = f"{title}'" if title.endswith("s") else f"{title}'s"
        text = (f"{owner} strongest point fell {near} in {_pct(hit)} of {subjects}; "
                f"{_pct(mass)} of its positive relevance lay inside the marked area")
        rows.append({"title": title, "pointing_game": _fmt(hit), "relevance_mass": _fmt(mass),
                     "images": f["images_with_mask"], "text": text + ".",
                     "key": (-_num(hit), -_num(mass))})
    rows.sort(key=lambda row: row["key"])
    base = table.baselines
    chance = ""
    if base:
        chance = (f"For comparison, a point drawn at random would land there in "
                  f"{base['pointing_game']:.0%} of {subjects}, and a map spread evenly "
                  f"over the image would have {base['relevance_mass']:.0%} of its "
                  f"relevance there (the marked area's share of the image).")
    return {"rows": rows, "chance": chance}


def _pct(v: Any) -> str:
    return "n/a" if not isinstance(v, float) or math.isnan(v) else f"{v:.0%}"


def _num(v: Any) -> float:
    return v if isinstance(v, float) and not math.isnan(v) else -math.inf


def write_html(table: CriteriaTable, path: str | Path, model_name: str, n_images: int,
               region: str = "the expert's mask", subjects: str = "images with a mask") -> Path:
    """Write criteria.html; ``region`` and ``subjects`` word the localisation sentences
    (e.g. "a lesion", "diseased eyes")."""
    env = Environment(loader=PackageLoader("mindlens", "templates"),
                      autoescape=select_autoescape(["html"]))
    rows = []
    for r in table.rows:
        title = methods.get(r["method"]).title if r["method"] in methods.names() else r["method"]
        if r["status"] != "ok":
            rows.append({"title": title, "ok": False, "reason": r["reason"]})
            continue
        cells = [(r["grades"][c], r["measured"][c]["figure"], _fmt(r["measured"][c]["value"]))
                 for c in CRITERIA]
        rows.append({"title": title, "ok": True, "cells": cells,
                     "sanity": r["figures"].get("sanity_check", "")})
    html = env.get_template("criteria.html").render(
        model_name=model_name, n_images=n_images, criteria=CRITERIA, rows=rows,
        thresholds=table.thresholds, recommendations=recommendations(table),
        localization=localization(table, region, subjects))
    path = Path(path)
    path.write_text(html, encoding="utf-8")
    return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.3g}"
    return str(v)
