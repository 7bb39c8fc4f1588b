"""Notebook ergonomics: short reprs, HTML reprs, show(), grayscale images in render,
targets by name in the API, the card's resize option and --version."""

from __future__ import annotations

import numpy as np
import pytest

import mindlens
from mindlens import explain, load_model
from mindlens.errors import InputError
from mindlens.render import mask_outline, overlay, to_display

from .tinynet import write_card


@pytest.fixture
def clf(tmp_path):
    return load_model(write_card(tmp_path))


def _img(h=16, w=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_reprs_are_short_and_name_the_classes(clf):
    e = explain(clf, [_img(), _img(seed=1)], "gradcam", top_k=2)
    text = repr(e)
    assert len(text) < 300 and "\n" not in text and "tensor" not in text
    assert "gradcam" in text and "[2, 2, 16, 16]" in text
    assert any(lab in text for lab in ("cat", "dog", "bird"))
    c = repr(clf)
    assert len(c) < 200 and "Tiny" in c and "3 classes" in c and "Conv2d" not in c


def test_html_reprs_show_the_image_with_its_maps(clf):
    e = explain(clf, _img(), "saliency", top_k=2)
    page = e._repr_html_()
    assert page.count("<img") == 3  # the image and two maps
    assert all(lab in page for lab in e.params["provenance"]["labels"][0])
    assert "cat" in clf._repr_html_() and "resize: stretch" in clf._repr_html_()


def test_show_draws_with_matplotlib(clf):
    import matplotlib

    matplotlib.use("Agg")
    e = explain(clf, _img(), "gradcam", top_k=2)
    fig = e.show()
    assert len(fig.axes) == 3
    from mindlens import cases

    (case,) = cases.run(clf, [_img()], cases.Request(methods=["gradcam"]))
    fig = mindlens.show(case)
    assert "The model says" in fig.axes[0].get_title()


@pytest.mark.parametrize("shape", [(12, 12), (12, 12, 1), (12, 12, 3)])
def test_render_accepts_grayscale_and_rgb(shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    disp = to_display(np.random.default_rng(1).random((12, 12)), signed=False)
    out = overlay(image, disp)
    assert out.shape == (12, 12, 3) and out.dtype == np.uint8
    mask = np.zeros((12, 12), bool)
    mask[3:6, 3:6] = True
    assert mask_outline(image, mask).shape == (12, 12, 3)


def test_target_by_name_in_the_api(clf):
    e = explain(clf, _img(), "gradcam", target="Dog")
    assert int(e.targets[0, 0]) == 1
    with pytest.raises(InputError, match="did you mean 'cat'"):
        explain(clf, _img(), "gradcam", target="cta")


@pytest.mark.parametrize(("mode", "probe"), [("stretch", None), ("crop", "centre"),
                                             ("pad", "border")])
def test_the_card_chooses_how_images_are_resized(tmp_path, mode, probe):
    clf = load_model(write_card(tmp_path, resize=mode))
    assert clf.resize == mode
    wide = np.full((16, 32, 3), 255, np.uint8)
    wide[:, :8] = 0  # a black band on the left quarter
    px = clf.display_pixels(clf.preprocess(wide))[0].astype(int)
    left = px[:, 0].mean()
    if mode == "crop":  # the centred 16x16 part: no black band
        assert left > 200
    elif mode == "pad":  # black borders above and below
        assert px[0].mean() < 30 and px[8, 12:].mean() > 200
    else:  # stretched: the band fills the left quarter of 16 pixels
        assert left < 30 and px[:, 5].mean() > 200
    with pytest.raises(InputError, match="resize must be one of"):
        load_model(write_card(tmp_path, resize="zoom"))


def test_version_flag():
    from typer.testing import CliRunner

    from mindlens.cli import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"mindlens {mindlens.__version__}"


def test_explain_takes_a_folder_and_a_class_name(tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from mindlens.cli import app

    card = write_card(tmp_path)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(_img(seed=i)).save(folder / f"{i}.png")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["explain", str(folder), "--model", str(card),
                                      "--methods", "gradcam", "--target", "bird",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "0.npz").exists() and (out / "1.npz").exists()
    prov = np.load(out / "0.npz")["provenance"].item()
    assert '"labels": ["bird"]' in prov
    bad = CliRunner().invoke(app, ["explain", str(folder), "--model", str(card),
                                   "--methods", "gradcam", "--target", "brid",
                                   "--out", str(out)])
    assert bad.exit_code == 2 and "did you mean 'bird'" in bad.output
