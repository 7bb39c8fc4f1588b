"""The seed's eight criteria as measured figures and ++/+/0/- grades from stated thresholds.

Each criterion has one headline figure (mean over the evaluated images) and a grade from
the thresholds in :data:`THRESHOLDS`; the thresholds are part of every saved table so the
report can print them next to the grades. Where a criterion needs humans or a controlled
experiment that was not run, the table says which automatic proxy stands in for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

GRADES = ("++", "+", "0", "-")

CRITERIA = ("degree of detail", "class discrimination", "implementation effort",
            "intuitive interpretability", "model agnosticism", "robustness",
            "real-time capability", "colour bias")


@dataclass(frozen=True)
class Threshold:
    """``figure`` graded by ``cuts`` (three values): with ``lower_is_better`` a value
    <= cuts[0] is ++, <= cuts[1] +, <= cuts[2] 0, else -; otherwise >= in the same way."""

    figure: str
    cuts: tuple[float, float, float]
    lower_is_better: bool
    explanation: str

    def grade(self, value: float) -> str:
        if not isinstance(value, (int, float)) or (isinstance(value, float)
                                                    and math.isnan(value)):
            return "n/a"
        for g, cut in zip(GRADES, self.cuts, strict=False):
            if (value <= cut) if self.lower_is_better else (value >= cut):
                return g
        return GRADES[-1]

    def describe(self) -> str:
        op = "<=" if self.lower_is_better else ">="
        parts = [f"{g} if {op} {c:g}" for g, c in zip(GRADES, self.cuts, strict=False)]
        return f"{self.figure}: " + ", ".join(parts) + ", else -. " + self.explanation


THRESHOLDS: dict[str, Threshold] = {
    "degree of detail": Threshold(
        "native_px_per_cell", (1, 16, 64), True,
        "Input pixels per native map cell (1 = pixel-exact, 64 = one value per 8x8 block)."),
    "class discrimination": Threshold(
        "class_spearman", (0.3, 0.5, 0.7), True,
        "Spearman correlation of |map| for the top-1 and top-2 class (lower = the map "
        "changes with the class)."),
    "implementation effort": Threshold(
        "config_items", (0, 1, 2), True,
        "Model-specific settings a user must supply (a layer: 1; per-layer rules: 2; a "
        "trained add-on: 3)."),
    "intuitive interpretability": Threshold(
        "pointing_game", (0.8, 0.6, 0.4), False,
        "Proxy, not a user study: pointing-game hit rate on the expert masks; without masks "
        "the normalised entropy (complexity / log(pixels)) graded <= 0.85/0.9/0.95."),
    "model agnosticism": Threshold(
        "access_rank", (0, 1, 2), True,
        "Access needed: 0 black box, 1 gradients, 2 a layer, 3 per-layer rules, 4 training."),
    "robustness": Threshold(
        "max_sensitivity", (0.2, 0.5, 1.0), True,
        "Relative max-sensitivity (Yeh et al. 2019); a method that fails the randomisation "
        "sanity check (Spearman > 0.7 after randomising the top layers) gets at most 0."),
    "real-time capability": Threshold(
        "ms_per_image", (33, 100, 1000), True,
        "Milliseconds per image and class on the machine that ran the evaluation "
        "(33 ms = 30 fps, 100 ms = interactive)."),
    "colour bias": Threshold(
        "colour_auroc", (0.9, 0.75, 0.6), False,
        "AUROC (0.5 = chance, 1 = perfect) that the method's explanations of the bundled "
        "colour-cue demo model carry a larger net colour share (relevance that differs "
        "between colour channels rather than common to all) than those of its control "
        "(same scenes, no colour cue), on 32 fresh demo images (spec §10; "
        "mindlens.metrics.colour, mindlens.demo.colour). Methods whose maps are purely "
        "spatial (CAM family, occlusion) cannot show a colour shortcut: '-'. Not measured "
        "(n/a) unless the evaluation ran the colour check (mindlens evaluate "
        "--colour-check, on by default "
        "with --demo)."),
}

NORMALISED_ENTROPY = Threshold("normalised_entropy", (0.85, 0.9, 0.95), True,
                               "Entropy of |map| divided by log(number of pixels).")


@dataclass
class CriteriaTable:
    """One row per method: ``figures`` (all measured means), ``grades`` and ``measured``
    (the figure each grade is based on) per criterion; or ``status="not applicable"`` with
    ``reason``."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    #: chance levels of the localisation metrics on the evaluated masks (see
    #: :func:`mindlens.evaluate.chance_levels`)
    baselines: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, str] = field(
        default_factory=lambda: {k: t.describe() for k, t in THRESHOLDS.items()})

    def to_dict(self) -> dict[str, Any]:
        return {"criteria": list(CRITERIA), "rows": self.rows, "thresholds": self.thresholds,
                "baselines": self.baselines}

    def to_markdown(self) -> str:
        head = "| method | " + " | ".join(CRITERIA) + " |"
        lines = [head, "|" + "---|" * (len(CRITERIA) + 1)]
        for row in self.rows:
            if row["status"] != "ok":
                lines.append(f"| {row['method']} | not applicable: {row['reason']} |")
                continue
            cells = [f"{row['grades'][c]} ({row['measured'][c]['figure']} = "
                     f"{_fmt(row['measured'][c]['value'])})" for c in CRITERIA]
            lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _mean(records: Sequence[Mapping[str, Any]], key: str) -> float:
    vals = [float(r[key]) for r in records if r.get(key) not in (None, "")
            and not math.isnan(float(r[key]))]
    return sum(vals) / len(vals) if vals else float("nan")


def summarize(method: str, records: Sequence[Mapping[str, Any]],
              info: Mapping[str, Any]) -> dict[str, Any]:
    """Aggregate the per-image records of one method into figures and grades.

    ``info``: per-method constants (``native_px_per_cell``, ``config_items``,
    ``access_rank``, ``access``, ``per_channel``; optionally ``colour_auroc`` and the other
    figures of :func:`mindlens.demo.colour.benchmark`).
    """
    keys = ("pointing_game", "energy_pointing_game", "relevance_mass", "relevance_rank",
            "iou", "sparseness", "complexity", "normalised_entropy", "deletion_auc",
            "insertion_auc", "max_sensitivity", "avg_sensitivity", "class_spearman",
            "class_ssim", "randomized_spearman", "ms_per_image", "forward", "backward",
            "colour_share")
    figures: dict[str, Any] = {k: _mean(records, k) for k in keys}
    figures.update(dict(info))
    figures["images"] = len(records)
    figures["images_with_mask"] = sum(
        1 for r in records if r.get("pointing_game") not in (None, "")
        and not math.isnan(float(r["pointing_game"])))
    basis = {c: THRESHOLDS[c] for c in CRITERIA}
    if figures["images_with_mask"] == 0:
        basis["intuitive interpretability"] = NORMALISED_ENTROPY
    colour = figures.get("colour_auroc")
    if not isinstance(colour, float):  # spatial maps cannot show it; else not measured
        figures["colour_auroc"] = ("cannot show" if not figures.get("per_channel") else
                                   colour if isinstance(colour, str) else "not measured")
    grades = {c: t.grade(figures[t.figure]) for c, t in basis.items()}
    if figures["colour_auroc"] == "cannot show":
        grades["colour bias"] = "-"
    measured = {c: {"figure": t.figure, "value": figures[t.figure]} for c, t in basis.items()}
    sanity = figures["randomized_spearman"]
    figures["sanity_check"] = ("n/a" if math.isnan(sanity) else
                               "pass" if sanity <= 0.7 else "fail")
    if figures["sanity_check"] == "fail" and grades["robustness"] in ("++", "+"):
        grades["robustness"] = "0"
    return {"method": method, "status": "ok", "reason": "", "figures": figures,
            "grades": grades, "measured": measured}
