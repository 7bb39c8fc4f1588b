"""The data side of the sanity check (Adebayo et al. 2018): DeconvNet on a ResNet without
max-pool switches gives the same map for every image of a class; the criteria table must
fail it, grade nothing ++, and say so in words; on a model with max-pool switches
(LeNet) the same method depends on the image and passes."""

from __future__ import annotations

import pytest
import torch

import mindlens
import mindlens.evaluate as ev
from mindlens import metrics
from mindlens.evaluate import evaluate
from mindlens.evaluation_report import recommendations, warnings, write_html

from ..conftest import assert_untouched, asset_images, fingerprint, load_asset

pytestmark = pytest.mark.usefixtures("one_thread")
SETTINGS = {"steps": 4, "sensitivity_samples": 1, "sanity_layers": 1, "batch_size": 4}


@pytest.fixture(scope="module")
def cifar_files():
    return asset_images("foolbox/cifar10_0[0-3]*.png")


def test_deconvnet_ignores_the_image_on_resnet20(resnet20, cifar_files):
    x = resnet20.preprocess(cifar_files)
    dep = metrics.input_dependence(metrics.method_explainer("deconvnet"), resnet20, x)
    assert (dep.spearman == 1.0).all() and (dep.identical == 1.0).all()
    sal = metrics.input_dependence(metrics.method_explainer("saliency"), resnet20, x)
    assert (sal.spearman < 0.9).all()


def test_criteria_fail_deconvnet_on_resnet20_and_say_so(resnet20, cifar_files, tmp_path):
    before = fingerprint(resnet20.module)
    table = evaluate(resnet20, cifar_files, methods=["deconvnet", "saliency"], **SETTINGS)
    assert_untouched(before, resnet20.module)
    rows = {r["method"]: r for r in table.rows}
    deconv, sal = rows["deconvnet"], rows["saliency"]
    assert deconv["figures"]["sanity_check"] == "fail"
    assert "depend on the image" in deconv["figures"]["sanity_reason"]
    assert "++" not in deconv["grades"].values()
    assert deconv["grades"]["degree of detail"] == "-"
    assert deconv["grades"]["robustness"] == "-"
    assert sal["figures"]["input_spearman"] < 0.9
    assert any("DeconvNet" in w for w in warnings(table))
    assert not any("DeconvNet" in text for _, text in recommendations(table))
    html = write_html(table, tmp_path / "criteria.html", "resnet20", 4).read_text()
    assert "Maps that do not explain" in html and "DeconvNet" in html


def test_deconvnet_depends_on_the_image_with_max_pool_switches(cifar_files):
    lenet = load_asset("cifar10_lenet")
    x = lenet.preprocess(cifar_files)
    dep = metrics.input_dependence(metrics.method_explainer("deconvnet"), lenet, x)
    assert (dep.spearman < 0.9).all() and (dep.identical == 0).all()
    table = evaluate(lenet, cifar_files, methods=["deconvnet"], **SETTINGS)
    assert "depend on the image" not in table.rows[0]["figures"]["sanity_reason"]


def test_explain_warns_when_images_of_one_class_get_the_same_map(resnet20, cifar_files):
    with pytest.warns(UserWarning, match="does not look at the image"):
        e = mindlens.explain(resnet20, cifar_files[:3], method="deconvnet", target=3)
    assert "identical maps" in e.extras["input_independent"]
    e = mindlens.explain(resnet20, cifar_files[:3], method="saliency", target=3)
    assert "input_independent" not in e.extras


def test_default_tolerance_scales_with_the_input():
    assert metrics.default_tolerance((224, 224)) == 15
    assert metrics.default_tolerance((32, 32)) == pytest.approx(15 * 32 / 224)


def test_budget_subsamples_the_same_images_when_resumed(resnet20, cifar_files, tmp_path,
                                                      monkeypatch):
    # one explanation "takes" 1 s and a forward 0: with SETTINGS a method explains each
    # image 1 + 1 + 1 + 2 = 5 times (clean, one noise sample, the runner-up class, the
    # randomised model and input dependence), so 5 s per image
    monkeypatch.setattr(ev, "time_one", lambda clf, algo, first, steps, copies: (1.0, 0.0, 10))
    seen = []
    table = evaluate(resnet20, cifar_files, methods=["saliency"], out_dir=tmp_path / "small",
                     budget=9, on_estimates=seen.extend, **SETTINGS)
    assert seen[0].seconds_per_image == 5 and seen[0].images == 0
    assert table.rows[0]["status"] == "not applicable"
    assert "not even 2 images fit" in table.rows[0]["reason"]
    table = evaluate(resnet20, cifar_files, methods=["saliency"], out_dir=tmp_path,
                     budget=10, **SETTINGS)
    first = [r["image"] for r in ev.read_records(tmp_path / ev.RESULTS)]
    assert len(first) == 2 and table.rows[0]["figures"]["images"] == 2
    assert "2 of 4 images" in table.rows[0]["figures"]["subsampled"]
    evaluate(resnet20, cifar_files, methods=["saliency"], out_dir=tmp_path, budget=10,
             **SETTINGS)  # resumed: the same two images, nothing new
    assert [r["image"] for r in ev.read_records(tmp_path / ev.RESULTS)] == first


def test_fit_budget_and_subsample():
    assert ev.fit_budget(2.0, 10, None) == (10, "")
    assert ev.fit_budget(2.0, 10, 20) == (10, "")
    assert ev.fit_budget(2.0, 10, 9) == (4, "")
    n, why = ev.fit_budget(2.0, 10, 3)
    assert n == 0 and "budget" in why
    assert ev.subsample(list(range(10)), 4) == [0, 2, 5, 7]
    assert ev.subsample(list(range(3)), 5) == [0, 1, 2]
    assert ev.subsample(list(range(3)), 0) == []


def test_evaluation_records_chance_next_to_every_score(resnet20, cifar_files):
    masks = [torch.zeros(32, 32, dtype=torch.bool) for _ in cifar_files]
    for m in masks:
        m[8:24, 8:24] = True
    table = evaluate(resnet20, cifar_files, masks, methods=["gradcam"], **SETTINGS)
    f = table.rows[0]["figures"]
    for key in ("pointing_chance", "centre_point", "pointing_margin", "mass_chance",
                "faithfulness_margin", "random_deletion_auc", "random_insertion_auc"):
        assert key in f
    assert f["centre_point"] == 1.0  # the centre lies inside every mask
    assert f["pointing_baseline"] == 1.0 and f["mass_chance"] == pytest.approx(0.25)
    assert table.rows[0]["grades"]["intuitive interpretability"] == "n/a"
    assert table.baselines["tolerance_px"] == pytest.approx(15 * 32 / 224)


def test_explain_report_warns_where_the_map_ignores_the_image(resnet20, cifar_files,
                                                             tmp_path):
    """``mindlens explain`` runs one image at a time; DeconvNet's identical maps across
    images of one class show only across cases, and the report says so under its picture,
    not under saliency's."""
    from mindlens import cases

    request = cases.Request(methods=("deconvnet", "saliency"), target=3)
    done = cases.run(resnet20, cifar_files, request)
    for c in done:
        assert c.explanations["deconvnet"].extras.get("input_independent")
        assert "input_independent" not in c.explanations["saliency"].extras
        assert any(m.method == "deconvnet" and m.provenance.get("input_independent")
                   for m in c.maps)
    html = cases.write_outputs(done, tmp_path, request=request)["report"].read_text()
    assert html.count("data-warning") == len(done)
    assert "explains nothing about it" in html
