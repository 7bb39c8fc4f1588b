"""The criteria table as a self-contained HTML page, with a recommendation in plain words
for each use case, each resting on a measured number that it cites (or withheld, saying
what evidence is missing)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from . import methods
from .errors import MindlensError
from .metrics.criteria import CRITERIA, THRESHOLDS, CriteriaTable
from .runs import write_atomic

RANK = {"++": 3, "+": 2, "0": 1, "-": 0}
Row = dict[str, Any]


def _title(name: str) -> str:
    return methods.get(name).title if name in methods.names() else name


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not math.isnan(float(v)) else math.nan


def _pct(v: Any) -> str:
    return "n/a" if math.isnan(_num(v)) else f"{_num(v):.0%}"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.3g}"
    return str(v)


def evidence(row: Row, criterion: str) -> str:
    """The measured number behind ``row``'s grade for ``criterion``, in words, next to its
    chance level where it has one."""
    f = row["figures"]
    if criterion == "degree of detail":
        px = _num(f.get("native_px_per_cell"))
        return ("one map value per input pixel" if px == 1 else
                f"one map value per {px:.0f} input pixels ({math.sqrt(px):.0f} x "
                f"{math.sqrt(px):.0f})")
    if criterion == "class discrimination":
        rho, other = _num(f.get("class_spearman")), _num(f.get("input_spearman"))
        text = (f"its maps for the top two classes of an image correlate at {rho:.2f} "
                f"(1 = the same map, 0 = unrelated maps)")
        if not math.isnan(other):
            text += f"; maps of two different images for one class: {other:.2f}"
        return text
    if criterion == "intuitive interpretability":
        if not f.get("images_with_mask"):
            return (f"no expert masks: normalised entropy {_fmt(_num(f['normalised_entropy']))}"
                    f" (1 = spread evenly over the image)")
        return (f"its strongest point hit the marked region in "
                f"{_pct(f['pointing_game'])} of {f['images_with_mask']} images, against "
                f"{_pct(f['pointing_baseline'])} for chance (the better of a random point, "
                f"{_pct(f['pointing_chance'])}, and the centre, {_pct(f['centre_point'])})")
    if criterion == "faithfulness":
        ins, dele = _num(f.get("insertion_auc")), _num(f.get("deletion_auc"))
        rins, rdel = _num(f.get("random_insertion_auc")), _num(f.get("random_deletion_auc"))
        return (f"insertion - deletion AUC {ins - dele:.2f} against {rins - rdel:.2f} for a "
                f"random pixel order (margin {_fmt(_num(f['faithfulness_margin']))})")
    if criterion == "robustness":
        return f"relative max-sensitivity {_fmt(_num(f.get('max_sensitivity')))}"
    if criterion == "real-time capability":
        return f"{_num(f.get('ms_per_image')):.0f} ms per image on this machine"
    if criterion == "model agnosticism":
        return f"needs {f.get('access', '?')}"
    if criterion == "implementation effort":
        return f"{f.get('config_items', '?')} model-specific setting(s)"
    if criterion == "colour bias":
        return f"colour AUROC {_fmt(f.get('colour_auroc'))}"
    return _fmt(row["measured"][criterion]["value"])


def _sane(row: Row) -> bool:
    return row["figures"].get("sanity_check") != "fail"


#: use case -> (criterion deciding it, what the recommended method does, in words)
USE_CASES: dict[str, tuple[str, str]] = {
    "Fine structures (small lesions, thin lines)": (
        "degree of detail", "it resolves the finest detail on this model"),
    "Several objects in one image": (
        "class discrimination", "its map changes most with the class asked about"),
    "A non-expert audience": (
        "intuitive interpretability", "its maps point at what the expert marked"),
    "Checking what the model really used": (
        "faithfulness", "removing what its map ranks first hurts the decision most"),
    "Real time": ("real-time capability", "it is the fastest on this machine"),
}


def _best(rows: list[Row], criterion: str, key: Callable[[Row], float]) -> Row | None:
    graded = [r for r in rows if r["grades"][criterion] != "n/a"]
    if not graded:
        return None
    return max(graded, key=lambda r: (RANK.get(r["grades"][criterion], 0), key(r)))


def best_method(table: CriteriaTable, criterion: str) -> str | None:
    """The method an evaluation recommends for ``criterion``: the best graded one among
    those that pass the sanity checks (for "intuitive interpretability" without expert
    masks: the most faithful one, as :func:`recommendations` says); ``None`` when no method
    has the evidence."""
    rows = [r for r in table.rows if r["status"] == "ok" and _sane(r)]
    if criterion == "intuitive interpretability" and not any(
            r["figures"].get("images_with_mask") for r in rows) and any(
            "faithfulness" in r["grades"] for r in rows):
        criterion = "faithfulness"
    rows = [r for r in rows if criterion in r["grades"]]
    if not rows:
        return None
    sign = -1.0 if THRESHOLDS[criterion].lower_is_better else 1.0
    best = _best(rows, criterion,
                 lambda r: sign * _num(r["measured"][criterion]["value"])
                 if not math.isnan(_num(r["measured"][criterion]["value"])) else -math.inf)
    return None if best is None else best["method"]


def recommendations(table: CriteriaTable) -> list[tuple[str, str]]:
    """One sentence per use case that cites the measured number it rests on. Methods that
    fail a sanity check are never recommended; where no method has the evidence (no masks,
    nothing measured) the recommendation is withheld and says why."""
    ok = [r for r in table.rows if r["status"] == "ok"]
    rows = [r for r in ok if _sane(r)]
    out = []
    for case, (criterion, why) in USE_CASES.items():
        if not ok:
            out.append((case, "No method could run on this model."))
            continue
        if not rows:
            out.append((case, "Withheld: every method that ran failed a sanity check on "
                              "this model."))
            continue
        sign = -1.0 if THRESHOLDS[criterion].lower_is_better else 1.0
        no_masks = (criterion == "intuitive interpretability"
                    and not any(r["figures"].get("images_with_mask") for r in rows))
        if no_masks:
            out.append((case, _without_masks(rows)))
            continue
        best = _best(rows, criterion,
                     lambda r, c=criterion, s=sign: s * _num(r["measured"][c]["value"])
                     if not math.isnan(_num(r["measured"][c]["value"])) else -math.inf)
        if best is None:
            out.append((case, f"Withheld: no method has a measured {criterion} here "
                              f"({next(iter(rows))['reasons'].get(criterion, 'n/a')})."))
            continue
        grade = best["grades"][criterion]
        title = _title(best["method"])
        if RANK.get(grade, 0) <= RANK["0"]:
            text = (f"No method does well here (best grade {grade}); the least bad is "
                    f"{title}: {evidence(best, criterion)}.")
        else:
            text = f"Use {title}: {why}: {evidence(best, criterion)} (grade {grade})."
        out.append((case, text))
    return out


def _without_masks(rows: list[Row]) -> str:
    """The non-expert recommendation when no expert marked anything: it rests on
    faithfulness and focus instead, and says so; withheld when neither was measured."""
    faithful = _best(rows, "faithfulness",
                     lambda r: _num(r["figures"].get("faithfulness_margin")))
    if faithful is None:
        return ("Withheld: no expert masks were given and no method's faithfulness could be "
                "measured, so there is no evidence about which maps a non-expert can trust. "
                "Give masks (--masks) to measure it.")
    f = faithful["figures"]
    return (f"No expert masks were given, so this rests on faithfulness and focus, not on "
            f"agreement with an expert: {_title(faithful['method'])} "
            f"({evidence(faithful, 'faithfulness')}; normalised entropy "
            f"{_fmt(_num(f.get('normalised_entropy')))}). Give masks (--masks) to check that "
            f"its maps point where an expert would.")


def warnings(table: CriteriaTable) -> list[str]:
    """Plain-words warnings about methods whose maps should not be read as explanations."""
    out = []
    for r in table.rows:
        if r["status"] == "ok" and r["figures"].get("sanity_check") == "fail":
            out.append(f"{_title(r['method'])}: {r['figures']['sanity_reason']}. Do not read "
                       f"its maps as an explanation of an image on this model.")
    return out


def localization(table: CriteriaTable, region: str = "the expert's mask",
                 subjects: str = "images with a mask") -> dict[str, Any]:
    """The localisation section: per method the pointing-game hit rate and the relevance
    mass accuracy on the masks, each beside its chance level on the same images and with a
    sentence in plain words, best margin first; empty rows when no image had a mask."""
    rows = []
    for r in table.rows:
        f = r.get("figures", {})
        if r["status"] != "ok" or not f.get("images_with_mask"):
            continue
        title = _title(r["method"])
        hit, mass = f["pointing_game"], f["relevance_mass"]
        tol = f.get("pointing_tolerance_px", 0)
        near = f"within {tol:.3g} px of {region}" if tol else f"on {region}"
        owner = f"{title}'" if title.endswith("s") else f"{title}'s"
        text = (f"{owner} strongest point fell {near} in {_pct(hit)} of {subjects} "
                f"(chance: {_pct(f['pointing_baseline'])}); {_pct(mass)} of its positive "
                f"relevance lay inside the marked area (chance: {_pct(f['mass_chance'])})")
        rows.append({"title": title, "pointing_game": _fmt(hit),
                     "pointing_chance": _fmt(f["pointing_baseline"]),
                     "pointing_margin": _fmt(f["pointing_margin"]),
                     "relevance_mass": _fmt(mass), "mass_chance": _fmt(f["mass_chance"]),
                     "mass_margin": _fmt(f["mass_margin"]),
                     "images": f["images_with_mask"], "text": text + ".",
                     "key": (-_sortable(f["pointing_margin"]), -_sortable(f["mass_margin"]))})
    rows.sort(key=lambda row: row["key"])
    base = table.baselines
    chance = ""
    if base:
        chance = (f"Chance levels on these masks: a point drawn at random lands there in "
                  f"{base['pointing_game']:.0%} of {subjects}, the image centre in "
                  f"{base.get('centre_point', math.nan):.0%}; a map spread evenly over the "
                  f"image has {base['relevance_mass']:.0%} of its relevance there (the marked "
                  f"area's share of the image). Margin = (value - chance) / (1 - chance).")
    return {"rows": rows, "chance": chance}


def _sortable(v: Any) -> float:
    return -math.inf if math.isnan(_num(v)) else _num(v)


def settings_lines(table: CriteriaTable) -> tuple[str, list[tuple[str, str]]]:
    """The evaluation's settings in words for the page: the metrics' in one line, and per
    method the parameters that differ from its defaults (the evaluation's or the user's);
    ``criteria.json`` holds all of them."""
    s = table.settings
    metric = ", ".join(f"{k.replace('_', ' ')} {s[k]}" for k in
                       ("steps", "sensitivity_samples", "sanity_layers", "tolerance", "seed",
                        "batch_size") if k in s)
    per_method = []
    for name, params in s.get("methods", {}).items():
        try:
            defaults = methods.get(name).defaults
        except MindlensError:
            defaults = {}
        changed = {k: v for k, v in params.items() if defaults.get(k, object()) != v}
        if changed:
            per_method.append((_title(name), ", ".join(f"{k}={v}" for k, v in changed.items())))
    return metric, per_method


def write_html(table: CriteriaTable, path: str | Path, model_name: str, n_images: int,
               region: str = "the expert's mask", subjects: str = "images with a mask",
               data_label: str = "your data") -> Path:
    """Write criteria.html; ``region`` and ``subjects`` word the localisation sentences
    (e.g. "a lesion", "diseased eyes"); ``data_label`` says what the images were
    ("your data", "synthetic demo data")."""
    env = Environment(loader=PackageLoader("mindlens", "templates"),
                      autoescape=select_autoescape(["html"]))
    rows = []
    for r in table.rows:
        title = _title(r["method"])
        if r["status"] != "ok":
            rows.append({"title": title, "ok": False, "reason": r["reason"]})
            continue
        reasons = r.get("reasons", {})
        cells = [(r["grades"][c], r["measured"][c]["figure"],
                  _fmt(r["measured"][c]["value"]),
                  reasons.get(c) or evidence(r, c)) for c in CRITERIA]
        rows.append({"title": title, "ok": True, "cells": cells,
                     "sanity": r["figures"].get("sanity_check", ""),
                     "sanity_reason": r["figures"].get("sanity_reason", ""),
                     "note": r["figures"].get("subsampled", "")})
    html = env.get_template("criteria.html").render(
        model_name=model_name, n_images=n_images, criteria=CRITERIA, rows=rows,
        thresholds=table.thresholds, recommendations=recommendations(table),
        warnings=warnings(table), localization=localization(table, region, subjects),
        data_label=data_label, settings=settings_lines(table))
    return write_atomic(path, html)  # a kill leaves the old page or the new one
