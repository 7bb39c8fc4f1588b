"""The demo report's inputs: the cases of :func:`mindlens.demo.demo_cases` as
:class:`mindlens.cases.Input` with their expert marks, and the request that explains them."""

from __future__ import annotations

from collections.abc import Sequence

from ..cases import Input, Request
from ..verdict import Words
from . import demo_cases, demo_unit_path, load_demo_model

#: how the demo's verdicts name things
WORDS = Words(region="lesion", regions="lesions", marker="the corner marker",
              subject="the retina")


def demo_request(method_names: Sequence[str]) -> Request:
    """Every map explains class 1 ("diseased"); occlusion with 16 px windows, stride 8 (a
    15x15 grid, readable and quick on a laptop CPU); RISE with 500 masks instead of 6,000
    (about 10 s instead of 2 min per case on 2 cores; its map is noisier)."""
    return Request(methods=list(method_names), target=1,
                   params={"occlusion": {"window": 16, "stride": 8},
                           "rise": {"n_masks": 500}}, words=WORDS)


def demo_inputs(seed: int = 2026) -> list[Input]:
    """The four demo cases, each with its model, true label, lesion mask and (shortcut
    case) the corner marker."""
    models = {name: load_demo_model(name) for name in ("retina", "shortcut")}
    out = []
    for i, case in enumerate(demo_cases(seed=seed)):
        clf = models[case["model"]]
        wrong = (case["p_diseased"] > 0.5) != (case["label"] == 1)
        unit = demo_unit_path(case["model"])
        # concepts explain any class: on a wrong decision show both classes
        params = {} if unit is None else {
            "mace": {"unit": str(unit), "target": [[1, 0]] if wrong else 1}}
        skip = {} if unit is not None else {
            "mace": "no concept unit is bundled for this model"}
        marker = case["marker_mask"] if case["marker_mask"].any() else None
        note = ("Every map explains the class “diseased”. The outline of the expert's marks "
                "shows the lesions" + (" and the corner marker" if marker is not None else "")
                + f"; model: {clf.name}."
                + (" MACE concepts also explain “healthy”, "
                   + ("the model's (wrong) decision." if case["label"] == 1 else
                      "the true class.") if wrong and unit is not None else ""))
        out.append(Input(case["image"], name=f"case_{i + 1}", title=case["title"],
                         label=int(case["label"]), mask=case["mask"], marker=marker,
                         classifier=clf, params=params, skip=skip, notes=[note]))
    return out
