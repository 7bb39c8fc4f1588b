"""The MACE concept panel of the HTML report, on the demo retina model and its bundled unit."""

from __future__ import annotations

import re
from html import unescape

import pytest
import torch
from typer.testing import CliRunner

from mindlens.api import explain
from mindlens.demo import demo_unit_path, load_demo_model, retina
from mindlens.methods.mace.method import get_unit
from mindlens.report import Report, _fidelity_sentence, concept_panel

N_TOP = 3


@pytest.fixture(scope="module")
def setup():
    clf = load_demo_model("retina")
    unit = demo_unit_path("retina")
    assert unit is not None, "the demo retina model ships a MACE unit"
    images, _labels, _ = retina.generate(2, seed=11)
    return clf, str(unit), images


def _panels(html: str) -> list[str]:
    return re.findall(r'<div class="concepts".*?</p>\s*</div>', html, flags=re.S)


def test_panel_for_both_classes(setup):
    clf, unit, images = setup
    x = clf.preprocess(list(images[:1]))
    pred = int(clf(x).argmax(1))
    # the predicted class and the other one: a non-predicted class must work too
    expl = explain(clf, x, "mace", unit=unit, target=[[pred, 1 - pred]])
    report = Report(clf)
    report.add(x, {"mace": expl}, pixels=images[:1])
    html = report.html()

    panels = _panels(html)
    assert len(panels) == 2
    tu = get_unit(unit)
    n_protos = tu.prototypes.crops.shape[2]
    assert 3 <= n_protos <= 5
    labels = clf.labels
    for t, panel in enumerate(panels):
        assert f"Concepts behind “{labels[int(expl.targets[0, t])]}" in panel
        assert panel.count('class="concept"') == N_TOP
        assert panel.count('class="region"') == N_TOP
        assert panel.count('alt="training patch"') == N_TOP * n_protos
        # the percentages are each concept's share of the concepts' evidence
        rho = expl.extras["concepts"]["relevance"][0, t].double()
        shares = re.findall(r'<div class="share">(\d+)%</div>', panel)
        expected = (100 * rho[:N_TOP].abs() / rho.abs().sum()).round().long().tolist()
        assert [int(s) for s in shares] == expected
    fid = f"{tu.fidelity:.0%}"
    text = unescape(html)
    assert f"agrees with the model's decision on {fid} of held-out images" in text
    assert "On this image, too, it reaches the same decision as the model." in text
    sources = re.findall(r'src="([^"]*)"', html)
    assert sources and all(s.startswith("data:image/") for s in sources)  # self-contained


def test_pruned_and_absent_concepts(setup):
    clf, unit, images = setup
    x = clf.preprocess(list(images[:1]))
    expl = explain(clf, x, "mace", unit=unit, target=1)
    c = expl.extras["concepts"]
    c["pruned"][0, 0, 0] = True  # the top concept left out
    c["maps"][0, 0, 1] = 0  # the next one absent from the image
    cp = concept_panel("mace", expl, 0, 0, images[0], "diseased (50%)")
    assert cp is not None and len(cp.concepts) == N_TOP
    kept = c["relevance"][0, 0, 1:].double()
    assert cp.concepts[0].share == pytest.approx(float(kept[0] / kept.abs().sum()))
    assert not cp.concepts[0].found and all(k.found for k in cp.concepts[1:])
    assert f"with {c['pruned'].shape[2] - 1} learnt concepts" in cp.summary
    if cp.concepts[0].share > 0:
        assert "absent from this image" in cp.summary
    # a method without concepts gets no panel
    expl.extras.pop("concepts")
    assert concept_panel("mace", expl, 0, 0, images[0], "diseased") is None


def test_fidelity_words():
    assert "on 99% of held-out" in _fidelity_sentence(0.994, "held-out")
    assert "on over 99% of test images" in _fidelity_sentence(0.996, None)
    assert "on 100% of" in _fidelity_sentence(1.0, "held-out")


def test_demo_explains_both_classes_of_the_wrong_case(tmp_path):
    from mindlens.cli import app

    torch.set_num_threads(1)
    result = CliRunner().invoke(app, ["demo", "--methods", "mace", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "report.html").read_text()
    # the third case is the retina model's worst image: misclassified (for this seed) or
    # borderline; MACE explains both classes exactly when the decision is wrong
    third = html.split('<section class="item"')[3]
    wrong = "Misclassified" in third.split("</h2>")[0]
    assert ("Concepts behind “healthy" in third) == wrong
    assert "Concepts behind “diseased" in third
    # 3 retina cases (+ the second class of a wrong case); no unit for the shortcut model
    assert len(_panels(html)) == 3 + wrong
    assert "no concept unit is bundled" in html
