"""The command line: explain writes a report and arrays; bad input is one line, exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mindlens.cli import app

from .tinynet import write_card

runner = CliRunner()


@pytest.fixture
def setup(tmp_path):
    card = write_card(tmp_path)
    rng = np.random.default_rng(0)
    images = []
    for i, mode in enumerate(["RGB", "L"]):
        arr = rng.integers(0, 256, (20, 24, 3 if mode == "RGB" else 1), dtype=np.uint8)
        path = tmp_path / f"img{i}.png"
        Image.fromarray(arr.squeeze()).save(path)
        images.append(path)
    return card, images, tmp_path


def test_explain_writes_report_and_arrays(setup):
    card, images, tmp = setup
    out = tmp / "out"
    result = runner.invoke(app, ["explain", *map(str, images), "--model", str(card),
                                 "--methods", "gradcam,saliency,cam", "--top-k", "2",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text()
    assert html.count('data-method="gradcam"') == 4  # 2 images x 2 classes
    assert 'src="http' not in html and "<script src" not in html  # self-contained
    for i in range(2):
        arrays = np.load(out / f"img{i}.npz")
        assert sorted(arrays.files) == ["cam", "gradcam", "provenance", "saliency"]
        assert (out / f"img{i}.png").exists()
        assert arrays["gradcam"].shape == (2, 16, 16)
    summary = json.loads((out / "summary.json").read_text())
    grad = [m for m in summary["images"]["img0"]["maps"] if m["method"] == "gradcam"]
    assert len(grad) == 2 and grad[0]["label"] in ("cat", "dog", "bird")


def test_methods_lists_every_method():
    result = runner.invoke(app, ["methods"])
    assert result.exit_code == 0
    for name in ("saliency", "guided_backprop", "gradcam", "cam", "guided_gradcam"):
        assert name in result.output


@pytest.mark.parametrize("case", ["missing", "corrupt", "method", "layer", "card"])
def test_bad_input_is_one_line_and_exit_2(setup, case):
    card, images, tmp = setup
    args = ["explain", str(images[0]), "--model", str(card), "--out", str(tmp / "o")]
    if case == "missing":
        args[1] = str(tmp / "nope.png")
    elif case == "corrupt":
        bad = tmp / "bad.png"
        bad.write_bytes(images[0].read_bytes()[:60])
        args[1] = str(bad)
    elif case == "method":
        args += ["--methods", "nosuch"]
    elif case == "layer":
        args += ["--methods", "gradcam", "--layer", "conv9"]
    elif case == "card":
        args[3] = str(tmp / "missing.json")
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert (lines and lines[-1].startswith("error:")) or "Error" in result.output


def test_layers_marks_auto(setup):
    card, _, _ = setup
    result = runner.invoke(app, ["layers", "--model", str(card)])
    assert result.exit_code == 0
    assert "conv2   <- auto" in result.output


def test_evaluate_writes_criteria_page(setup):
    card, images, tmp = setup
    data = tmp / "data"
    data.mkdir()
    for p in images:
        (data / p.name).write_bytes(p.read_bytes())
    out = tmp / "ev"
    result = runner.invoke(app, ["evaluate", "--model", str(card), "--data", str(data),
                                 "--methods", "gradcam,saliency", "--out", str(out),
                                 "--steps", "4"])
    assert result.exit_code == 0, result.output
    html = (out / "criteria.html").read_text()
    assert "Grad-CAM" in html and "Gradient saliency" in html and "Recommendations" in html
    assert "Settings of this evaluation" in html and "steps 4" in html
    saved = json.loads((out / "criteria.json").read_text())
    assert saved["rows"] and saved["settings"]["steps"] == 4


def test_explain_with_baselines_adds_a_sensitivity_figure(setup):
    card, images, tmp = setup
    out = tmp / "out"
    result = runner.invoke(app, ["explain", str(images[0]), "--model", str(card), "--methods",
                                 "occlusion,cam", "--baselines", "zero,mean,blur,0.5",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    sens = json.loads((out / "summary.json").read_text())["images"]["img0"][
        "baseline_sensitivity"]
    assert sens["baselines"] == ["zero", "mean", "blur", "0.5"] and len(sens["pairs"]) == 6
    # the numbers are the correlations of the maps the library computes
    from mindlens.methods.perturbation.sensitivity import baseline_sensitivity
    from mindlens.model_card import load_model

    clf = load_model(card)
    ref = baseline_sensitivity(clf, clf.preprocess(images[0]), ["zero", "mean", "blur", 0.5])
    for got, want in zip(sens["pairs"], ref["pairs"], strict=True):
        assert got["pearson"][0] == pytest.approx(want["pearson"][0][0], abs=1e-5)
        assert got["spearman"][0] == pytest.approx(want["spearman"][0][0], abs=1e-5)
    assert np.allclose(np.load(out / "img0.npz")["occlusion"],
                       ref["explanations"]["zero"].maps[0].numpy(), atol=1e-6)
    html = (out / "report.html").read_text()
    assert "does the occlusion map depend on the fill value?" in html
    assert "zero vs mean: Pearson" in html and "lesion" in html
    assert html.count('data-method="occlusion"') == 1


@pytest.mark.parametrize("args", [["--methods", "cam", "--baselines", "zero,mean"],
                                  ["--methods", "occlusion", "--baselines", "zero"],
                                  ["--methods", "occlusion", "--baselines", "zero,grey"]])
def test_bad_baselines_are_one_line(setup, args):
    card, images, tmp = setup
    result = runner.invoke(app, ["explain", str(images[0]), "--model", str(card), *args,
                                 "--out", str(tmp / "o")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "baselines" in result.output


def test_occlusion_mode_from_the_command_line(setup):
    """--occlusion-mode reaches the method: auto (the default) and incremental give the
    exact map, auto says how in summary.json; approximate writes its measured error there;
    a wrong mode is one line, exit 2."""
    card, images, tmp = setup
    maps = {}
    for mode in ("auto", "exact", "incremental", "approximate"):
        out = tmp / mode
        result = runner.invoke(app, ["explain", str(images[0]), "--model", str(card),
                                     "--methods", "occlusion", "--occlusion-mode", mode,
                                     "--out", str(out)])
        assert result.exit_code == 0, result.output
        maps[mode] = np.load(out / "img0.npz")["occlusion"]
        entry = json.loads(np.load(out / "img0.npz")["provenance"].item())["occlusion"]
        assert ("approximation" in entry) == (mode == "approximate")
        assert ("exact_path" in entry) == (mode == "auto")
        # the report tells the reader that a preview is a preview, and how far off it was
        html = (out / "report.html").read_text()
        assert ("quick preview" in html) == (mode == "approximate")
        if mode == "approximate":
            err = entry["approximation"]["relative_error"]
            size = (f"up to {err:.0%}" if err >= 0.1 else f"up to {err:.1%}"
                    if err >= 0.001 else "less than 0.1%")
            assert f"off by {size} of their largest drop" in html
    # probabilities of an untrained net barely move: compare in absolute terms
    np.testing.assert_allclose(maps["incremental"], maps["exact"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(maps["auto"], maps["exact"], rtol=0, atol=1e-6)
    result = runner.invoke(app, ["explain", str(images[0]), "--model", str(card),
                                 "--methods", "occlusion", "--occlusion-mode", "fast",
                                 "--out", str(tmp / "bad")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--occlusion-mode" in result.output


def test_explain_with_masks_and_trusted_method(setup):
    """--masks gives the verdict its marks; --trusted picks the picture's method."""
    card, images, tmp = setup
    marks = tmp / "marks"
    marks.mkdir()
    mask = np.zeros((20, 24), np.uint8)
    mask[2:10, 2:10] = 255
    Image.fromarray(mask).save(marks / "img0.png")
    out = tmp / "m"
    result = runner.invoke(app, ["explain", *map(str, images), "--model", str(card),
                                 "--methods", "gradcam,saliency", "--trusted", "saliency",
                                 "--masks", str(marks), "--out", str(out)])
    assert result.exit_code == 0, result.output
    cases = json.loads((out / "summary.json").read_text())["images"]
    assert cases["img0"]["trusted"] == "saliency"
    assert cases["img0"]["verdict"]["regions_total"] == 1
    assert cases["img1"]["verdict"]["regions_total"] is None  # no mask for this one
    html = (out / "report.html").read_text()
    assert html.count('data-outline="yes"') == 1 and html.count('data-outline="no"') == 1
