"""The seed's eight criteria, plus faithfulness, as measured figures and ++/+/0/- grades
from stated thresholds.

Each criterion has one headline figure (mean over the evaluated images) and a grade from
the thresholds in :data:`THRESHOLDS`; the thresholds are part of every saved table so the
report can print them next to the grades. Where a criterion needs humans or a controlled
experiment that was not run, the table says which automatic proxy stands in for it.

Grades that a map could earn by luck are graded on the margin over chance on the same
images: the pointing game against the better of a random point and the centre point,
faithfulness against a random pixel order. A number that is undefined (a flat map, no
masks, a chance level that leaves no room) is "n/a" with the reason, never a NaN or a
division by zero. A method whose maps do not depend on the input (the data side of the
sanity check) gets "-" for detail and robustness and at most "0" elsewhere, whatever its
figures say.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

GRADES = ("++", "+", "0", "-")

CRITERIA = ("degree of detail", "class discrimination", "implementation effort",
            "intuitive interpretability", "model agnosticism", "robustness",
            "real-time capability", "colour bias", "faithfulness")

#: the sanity check's cuts: model side (Spearman after randomising the top layers, Adebayo
#: et al. 2018 §3) and data side (median Spearman between maps of different images for the
#: same class, :mod:`mindlens.metrics.input_dependence`)
MODEL_RANDOMISATION_CUT = 0.7
INPUT_DEPENDENCE_CUT = 0.9
#: a chance level above this leaves no room for a method to show anything
CHANCE_CEILING = 0.95


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
        "pointing_margin", (0.6, 0.4, 0.2), False,
        "Proxy, not a user study: the pointing game's margin over chance on the expert "
        "masks, (hit rate - chance) / (1 - chance), chance being the better of a random "
        "point and the centre point on the same images (0 = no better than chance, 1 = "
        "always on the mask); without masks the normalised entropy (complexity / "
        "log(pixels), 1 = a uniform map) graded <= 0.85/0.9/0.95."),
    "model agnosticism": Threshold(
        "access_rank", (0, 1, 2), True,
        "Access needed: 0 black box, 1 gradients, 2 a layer, 3 per-layer rules, 4 training."),
    "robustness": Threshold(
        "max_sensitivity", (0.2, 0.5, 1.0), True,
        "Relative max-sensitivity (Yeh et al. 2019); a method that fails the model "
        "randomisation check (Spearman > 0.7 after randomising the top layers) gets at "
        "most 0, one whose maps do not depend on the input (median Spearman >= 0.9 between "
        "maps of different images for the same class) gets -."),
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
    "faithfulness": Threshold(
        "faithfulness_margin", (0.2, 0.1, 0.03), False,
        "Insertion AUC minus deletion AUC (Petsiuk et al. 2018: probability of the class as "
        "the most relevant pixels come back / go first) minus the same for a random pixel "
        "order on the same images: 0 = the map orders pixels no better than chance."),
}

NORMALISED_ENTROPY = Threshold("normalised_entropy", (0.85, 0.9, 0.95), True,
                               "Entropy of |map| divided by log(number of pixels).")


@dataclass
class CriteriaTable:
    """One row per method: ``figures`` (all measured means), ``grades``, ``measured`` (the
    figure each grade is based on) and ``reasons`` (why a grade is n/a) per criterion; or
    ``status="not applicable"`` with ``reason``."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    #: chance levels of the localisation metrics on the evaluated masks (see
    #: :func:`mindlens.evaluate.chance_levels`)
    baselines: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, str] = field(
        default_factory=lambda: {k: t.describe() for k, t in THRESHOLDS.items()})
    #: every setting the evaluation ran with: the metrics' (steps, noise samples, sanity
    #: layers, tolerance, seed, batch size) and each method's parameters, defaults filled in
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: an undefined number is ``None``, never NaN."""
        return _json_safe({"criteria": list(CRITERIA), "rows": self.rows,
                           "thresholds": self.thresholds, "baselines": self.baselines,
                           "settings": self.settings})

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


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.3g}"
    return str(v)


def _values(records: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in records if r.get(key) not in (None, "")
            and not math.isnan(float(r[key]))]


def _mean(records: Sequence[Mapping[str, Any]], key: str) -> float:
    vals = _values(records, key)
    return sum(vals) / len(vals) if vals else float("nan")


def _paired(records: Sequence[Mapping[str, Any]], a: str, b: str) -> list[tuple[float, float]]:
    """``(a, b)`` of the images where both are defined."""
    out = []
    for r in records:
        if r.get(a) in (None, "") or r.get(b) in (None, ""):
            continue
        x, y = float(r[a]), float(r[b])
        if not (math.isnan(x) or math.isnan(y)):
            out.append((x, y))
    return out


def margin_over_chance(value: float, chance: float) -> float:
    """``(value - chance) / (1 - chance)``: 0 at chance, 1 at perfect, negative below
    chance; NaN when chance leaves no room (>= :data:`CHANCE_CEILING`)."""
    if math.isnan(value) or math.isnan(chance) or chance >= CHANCE_CEILING:
        return float("nan")
    return (value - chance) / (1 - chance)


def chance_figures(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Each localisation and faithfulness figure's chance level, measured on the very
    images the figure was measured on, and the margins that the grades use."""
    f: dict[str, float] = {}
    hits = _paired(records, "pointing_game", "pointing_chance")
    centre = _paired(records, "pointing_game", "centre_hit")
    f["pointing_chance"] = sum(c for _, c in hits) / len(hits) if hits else float("nan")
    f["centre_point"] = sum(c for _, c in centre) / len(centre) if centre else float("nan")
    hit_rate = sum(h for h, _ in hits) / len(hits) if hits else float("nan")
    f["pointing_baseline"] = max(f["pointing_chance"], f["centre_point"]) if hits else \
        float("nan")
    f["pointing_margin"] = margin_over_chance(hit_rate, f["pointing_baseline"])
    mass = _paired(records, "relevance_mass", "mask_share")
    f["mass_chance"] = sum(c for _, c in mass) / len(mass) if mass else float("nan")
    f["mass_margin"] = (margin_over_chance(sum(m for m, _ in mass) / len(mass),
                                           f["mass_chance"]) if mass else float("nan"))
    faith = [(r, float(r["insertion_auc"]) - float(r["deletion_auc"])
              - float(r["random_insertion_auc"]) + float(r["random_deletion_auc"]))
             for r in records
             if all(r.get(k) not in (None, "") for k in ("insertion_auc", "deletion_auc",
                                                           "random_insertion_auc",
                                                           "random_deletion_auc"))]
    faith = [(r, v) for r, v in faith if not math.isnan(v)]
    f["faithfulness_margin"] = (sum(v for _, v in faith) / len(faith) if faith
                                else float("nan"))
    f["random_deletion_auc"] = _mean(records, "random_deletion_auc")
    f["random_insertion_auc"] = _mean(records, "random_insertion_auc")
    return f


def sanity(figures: Mapping[str, Any]) -> tuple[str, str]:
    """The sanity check's verdict (``pass``, ``fail`` or ``n/a``) and its reason in words,
    from both sides: the model (randomised top layers) and the data (other images)."""
    model, data = figures["randomized_spearman"], figures["input_spearman"]
    fails = []
    if not math.isnan(data) and data >= INPUT_DEPENDENCE_CUT:
        fails.append(f"its maps barely depend on the image (maps of different images for "
                     f"the same class correlate at {data:.2f})")
    if not math.isnan(model) and model > MODEL_RANDOMISATION_CUT:
        fails.append(f"its maps barely change when the model's top layers are randomised "
                     f"(Spearman {model:.2f})")
    if fails:
        return "fail", "; ".join(fails)
    if math.isnan(model) and math.isnan(data):
        return "n/a", "not measured"
    return "pass", ""


#: figures that rank or compare the pixels of a map (undefined for flat maps)
MAP_FIGURES = ("pointing_margin", "class_spearman", "max_sensitivity", "faithfulness_margin",
               "normalised_entropy")


def _na_reason(figure: str, figures: Mapping[str, Any],
               records: Sequence[Mapping[str, Any]]) -> str:
    """Why ``figure`` is undefined, in words."""
    n = len(records)
    flat = sum(1 for r in records if r.get("flat_map") == 1.0)
    if n and flat == n and figure in MAP_FIGURES:
        return "every map was flat (the same value everywhere), so it ranks no pixel"
    if figure in ("pointing_margin", "pointing_game"):
        if not figures.get("images_with_mask"):
            return "no image had an expert mask"
        if figures.get("pointing_baseline", 0) >= CHANCE_CEILING:
            return (f"a point drawn at random already hits in "
                    f"{figures['pointing_baseline']:.0%} of the images at this tolerance: "
                    f"the masks leave no room to tell methods apart")
    if figure == "class_spearman":
        return "the model has a single output, or the maps were flat"
    if figure == "max_sensitivity":
        return "not measured, or the maps were zero (relative sensitivity is undefined)"
    if figure == "colour_auroc":
        return "the colour check was not run (mindlens evaluate --colour-check)"
    return "not measured on these images"


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
            "class_ssim", "randomized_spearman", "input_spearman", "input_identical",
            "ms_per_image", "forward", "backward", "colour_share", "flat_map")
    figures: dict[str, Any] = {k: _mean(records, k) for k in keys}
    figures.update(dict(info))
    figures["images"] = len(records)
    figures["images_with_mask"] = len(_values(records, "pointing_chance"))
    figures.update(chance_figures(records))
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
    figures["sanity_check"], figures["sanity_reason"] = sanity(figures)
    reasons = {c: _na_reason(t.figure, figures, records) for c, t in basis.items()
               if grades[c] == "n/a"}
    data = figures["input_spearman"]
    if not math.isnan(data) and data >= INPUT_DEPENDENCE_CUT:
        # a map that ignores the image explains nothing: no column may praise it
        for c in CRITERIA:
            if c in ("degree of detail", "robustness"):
                grades[c] = "-"
            elif grades[c] in ("++", "+"):
                grades[c] = "0"
            else:
                continue
            reasons[c] = "its maps do not depend on the input (sanity check failed)"
    elif figures["sanity_check"] == "fail" and grades["robustness"] in ("++", "+"):
        grades["robustness"] = "0"
    return {"method": method, "status": "ok", "reason": "", "figures": figures,
            "grades": grades, "measured": measured, "reasons": reasons}
