"""Output kinds (softmax / sigmoid multi-label / single logit): one probability rule
(Classifier.probabilities) for explanations, targets, the report and the CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import mindlens
from mindlens.cli import app
from mindlens.errors import InputError, ModelError, NotApplicableError
from mindlens.model_card import load_model
from mindlens.report import Report

from . import modern_nets as mn

pytestmark = pytest.mark.usefixtures("one_thread")


def x_for(clf: mindlens.Classifier, n: int = 2) -> torch.Tensor:
    torch.manual_seed(3)
    return torch.randn(n, 3, *clf.input_size, dtype=clf.dtype)


def test_output_kind_is_validated():
    model = mn.build("modern_toy").module
    with pytest.raises(InputError, match="output must be one of"):
        mindlens.Classifier(model, (12, 12), output="probs")
    with pytest.raises(InputError, match=r"\"output\" must be one of"):
        load_model({"factory": "tests.modern_nets:single_logit_module", "input_size": [32, 32],
                    "output": ["sigmoid"]})
    five = mindlens.Classifier(model, (12, 12), output="single_logit")
    with pytest.raises(ModelError, match=r"single_logit.*5 logits"):
        five.predict(x_for(five))
    with pytest.raises(InputError, match=r"\[positive\] or \[negative, positive\]"):
        mindlens.Classifier(model, (12, 12), output="single_logit", labels=["a", "b", "c"])


def test_probabilities_per_kind():
    z = torch.tensor([[2.0, -1.0, 0.5]])
    model = mn.build("modern_toy").module
    soft = mindlens.Classifier(model, (12, 12))
    multi = mindlens.Classifier(model, (12, 12), output="sigmoid")
    torch.testing.assert_close(soft.probabilities(z), z.softmax(1))
    torch.testing.assert_close(multi.probabilities(z), torch.sigmoid(z))
    assert float(multi.probabilities(z).sum()) > 1  # independent labels, no sum to 1


def test_multilabel_explanations_use_sigmoid_probabilities_and_threshold():
    clf = mn.multilabel()
    x = x_for(clf)
    logits = clf(x).detach()
    p = torch.sigmoid(logits)
    e = mindlens.explain(clf, x, "lrp", top_k=2)
    torch.testing.assert_close(e.targets, p.topk(2, dim=1).indices)  # the k most probable
    torch.testing.assert_close(e.probs, p.gather(1, e.targets))
    thr = float(p[0].sort(descending=True).values[2]) - 1e-9  # 3 labels of image 0 pass
    e = mindlens.explain(clf, x[:1], "gradcam", threshold=thr)
    assert e.targets.shape == (1, 3)
    assert set(e.targets[0].tolist()) == set(torch.nonzero(p[0] >= thr).flatten().tolist())
    with pytest.raises(InputError, match="threshold"):
        mindlens.explain(clf, x, "gradcam", threshold=1.5)


def test_contrastive_lrp_refuses_non_softmax_outputs():
    for clf in (mn.multilabel(), mn.single_logit()):
        for method in ("sglrp", "clrp"):
            with pytest.raises(NotApplicableError, match="labels do not compete"):
                mindlens.explain(clf, x_for(clf, 1), method)


def _percent(p: float) -> str:
    return f"{100 * p:.1f}%"


def test_multilabel_report_shows_every_label_and_explains_each_requested_one():
    clf = mn.multilabel()
    x = x_for(clf, 1)
    p = torch.sigmoid(clf(x).detach())[0]
    report = Report(clf)
    thr = float(p.sort(descending=True).values[1]) - 1e-9
    report.add(x, {"lrp": mindlens.explain(clf, x, "lrp", threshold=thr),
                   "gradcam": mindlens.explain(clf, x, "gradcam", threshold=thr)})
    html = report.html()
    assert "multi-label" in html
    for label, q in zip(mn.FINDINGS, p.tolist(), strict=True):
        assert re.search(rf'title="{label}">{label}</span>.*?<span>{_percent(q)}</span>', html,
                         re.S), label
    for c in p.topk(2).indices.tolist():
        assert f"Why “{mn.FINDINGS[c]} ({p[c]:.0%})”?" in html


def test_single_logit_report_shows_the_positive_probability_and_its_complement():
    clf = mn.single_logit()
    x = x_for(clf, 1)
    z = float(clf(x).detach()[0, 0])
    q = 1 / (1 + np.exp(-z))
    e = mindlens.explain(clf, x, "gradcam")
    assert e.targets.tolist() == [[0]]
    assert float(e.probs[0, 0]) == pytest.approx(q, abs=1e-12)
    report = Report(clf)
    report.add(x, {"gradcam": e, "lrp": mindlens.explain(clf, x, "lrp")})
    html = report.html()
    assert re.search(rf'title="lesion">lesion</span>.*?<span>{_percent(q)}</span>', html, re.S)
    assert re.search(rf'title="not lesion">not lesion</span>.*?<span>{_percent(1 - q)}</span>',
                     html, re.S)
    assert f"Why “lesion ({q:.0%})”?" in html


@pytest.mark.parametrize("kind", ["sigmoid", "single_logit"])
def test_cli_summary_has_the_kind_and_its_probabilities(tmp_path, kind):
    factory = "multilabel_module" if kind == "sigmoid" else "single_logit_module"
    labels = mn.FINDINGS if kind == "sigmoid" else ["healthy", "lesion"]
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"factory": f"tests.modern_nets:{factory}",
                                "input_size": [32, 32], "labels": labels, "output": kind}))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    args = ["explain", str(tmp_path / "a.png"), "--model", str(card), "--methods",
            "gradcam,lrp", "--out", str(tmp_path / "out")]
    if kind == "sigmoid":
        args += ["--threshold", "0.01"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["output"] == kind
    clf = load_model(card)
    x = clf.preprocess(tmp_path / "a.png")
    p = clf.predict(x)[0]
    maps = [m for m in summary["images"]["a"]["maps"] if m["method"] == "lrp"]
    got = {"targets": [m["target"] for m in maps],
           "probs": [m["probability"] for m in maps]}
    if kind == "sigmoid":  # every label above 0.01: all four here
        assert sorted(got["targets"]) == [i for i in range(4) if p[i] >= 0.01]
    assert got["probs"] == pytest.approx(p[got["targets"]].tolist(), abs=1e-6)
    html = (tmp_path / "out" / "report.html").read_text()
    if kind == "single_logit":
        assert "healthy" in html and "lesion" in html
