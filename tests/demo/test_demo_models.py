"""The bundled demo models: load through their cards, accuracy, and the learnt shortcut."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import mindlens
from mindlens.demo import (
    ASSETS,
    demo_cases,
    demo_unit_path,
    load_retina_model,
    load_shortcut_model,
    retina,
    shortcut,
)
from tests.conftest import assert_untouched, fingerprint

FRESH_SEED = 4242  # the models were trained on seed 0 and tested on seed 1


def predict(clf: mindlens.Classifier, images: np.ndarray) -> np.ndarray:
    out = [clf.predict(clf.preprocess(list(images[i:i + 250]))) for i in range(0, len(images),
                                                                              250)]
    return torch.cat(out).argmax(1).numpy()


@pytest.mark.parametrize(("name", "cells"), [("retina", 32), ("shortcut", 16)])
def test_card_weights_and_metadata(name, cells):
    card = json.loads((ASSETS / f"{name}.json").read_text())
    assert card["factory"] == "mindlens.demo.model:build"
    assert card["labels"] == ["healthy", "diseased"] and card["input_size"] == [128, 128]
    assert (ASSETS / card["weights"]).stat().st_size < 5 * 2**20
    info = card["training"]
    assert info["seed"] != FRESH_SEED and info["test_seed"] != FRESH_SEED
    assert info["train_size"] > 0 and info["test_size"] >= 1000
    clf = mindlens.load_model(ASSETS / f"{name}.json")
    assert sum(p.numel() for p in clf.module.parameters()) < 300_000
    layer_name, layer = clf.layer("auto")
    assert layer_name == "features"  # the last block's output
    shapes = []
    with clf.patched() as patch, torch.no_grad():
        patch.forward_hook(layer, lambda _m, _i, out: shapes.append(tuple(out.shape[1:])))
        clf(torch.zeros(1, 3, 128, 128))
    assert shapes == [(64, cells, cells)]


@pytest.fixture(scope="module")
def fresh() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return retina.generate(200, seed=FRESH_SEED)


def test_retina_model_is_accurate_on_fresh_images(fresh):
    """At least 95 % right on 200 fresh images (on 1,000: benchmarks/demo_model.py)."""
    torch.set_num_threads(2)
    images, labels, _ = fresh
    acc = (predict(load_retina_model(), images) == labels).mean()
    assert acc >= 0.95, acc


def test_retina_model_gradcam_points_at_lesions(fresh):
    """The retina model is the demo of a model worth trusting: Grad-CAM (``layer="auto"``,
    class diseased) has its maximum within 4 px of a lesion on at least 80 % of the 100
    fresh diseased eyes (on 1,000 images: benchmarks/demo_model.py; a random point: 4 %)."""
    from mindlens.demo.train import gradcam_pointing

    images, labels, masks = fresh
    got = gradcam_pointing(load_retina_model(), images, labels, masks, tolerance=4)
    assert got["diseased_images"] == 100 and got["feature_map"] == [32, 32]
    assert got["pointing_game"] >= 0.8, got


@pytest.fixture(scope="module")
def swapped() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return shortcut.generate(200, seed=FRESH_SEED, split="swapped")


def test_shortcut_model_fails_when_the_marker_moves(swapped):
    clf = load_shortcut_model()
    x_train, y_train, _, _ = shortcut.generate(200, seed=FRESH_SEED, split="train")
    x_swap, y_swap, _, _ = swapped
    acc_train = (predict(clf, x_train) == y_train).mean()
    acc_swap = (predict(clf, x_swap) == y_swap).mean()
    assert acc_train >= 0.9
    assert acc_swap <= acc_train - 0.3, (acc_train, acc_swap)
    # healthy images with the marker are mostly called diseased
    healthy = y_swap == 0
    assert (predict(clf, x_swap[healthy]) == 1).mean() > 0.5


def test_gradcam_finds_the_marker(swapped):
    """Grad-CAM for "diseased" on healthy images with the marker puts its mass on the marker.

    The marker covers 0.7 % of the image. Mass share = sum of the map inside a region / sum
    of the map. Inside the exact marker mask the share must be >= 5x the marker's area share
    on every image (measured: about 11x). Grad-CAM works on the 16x16 feature map (one cell
    per 8 px) and is upsampled bilinearly, so its mass cannot stay inside a 6 px high strip:
    inside the marker grown by two cells (16 px, under 6 % of the image) the median share
    must exceed one half (measured: about 0.65).
    """
    from skimage.morphology import dilation, footprint_rectangle

    clf = load_shortcut_model()
    x, y, _, marks = swapped
    keep = np.flatnonzero(y == 0)[:24]
    before = fingerprint(clf.module)
    ex = mindlens.explain(clf, list(x[keep]), "gradcam", target=1)
    assert_untouched(before, clf.module)
    maps = ex.maps[:, 0].numpy()
    total = np.maximum(maps.sum((1, 2)), 1e-12)
    exact = marks[keep]
    share = (maps * exact).sum((1, 2)) / total
    assert (share >= 5 * exact.mean((1, 2))).all(), share / exact.mean((1, 2))
    grown = np.stack([dilation(m, footprint_rectangle((33, 33))) for m in exact])
    assert grown.mean() < 0.06
    assert np.median((maps * grown).sum((1, 2)) / total) > 0.5


def test_demo_cases():
    cases = demo_cases(seed=99, n=48)
    assert [c["model"] for c in cases] == ["retina", "retina", "retina", "shortcut"]
    for c in cases:
        assert c["image"].dtype == np.uint8 and c["image"].shape == (128, 128, 3)
        assert c["mask"].shape == c["marker_mask"].shape == (128, 128)
        assert isinstance(c["title"], str) and 0 <= c["p_diseased"] <= 1
    sick, well, _, short = cases
    assert sick["label"] == 1 and sick["mask"].any() and sick["p_diseased"] > 0.5
    assert well["label"] == 0 and not well["mask"].any() and well["p_diseased"] < 0.5
    assert short["label"] == 0 and short["marker_mask"].any()


def test_demo_unit_path():
    for name in ("retina", "shortcut"):
        path = demo_unit_path(name)
        assert path is None or (path.name == f"{name}_mace.safetensors" and path.exists())
    with pytest.raises(ValueError, match="demo model"):
        demo_unit_path("resnet")


def test_one_pooling_gives_a_32x32_feature_map():
    """``build(pooled=1)`` drops the second pooling: the same weights (a bundled state dict
    loads) and a 32x32 feature map, one cell per 4x4 pixels."""
    from mindlens.demo.model import build

    net = build(pooled=1).eval()
    net.load_state_dict(load_retina_model().module.state_dict())
    assert net.features(torch.zeros(1, 3, 128, 128)).shape == (1, 64, 32, 32)
    assert build().features(torch.zeros(1, 3, 128, 128)).shape == (1, 64, 16, 16)


@pytest.mark.parametrize("name", ["retina", "shortcut", "colour", "colour_control"])
def test_recipes_are_those_of_the_bundled_cards(name):
    """``python -m mindlens.demo.train`` (with the model's flag) retrains with the recipe
    that each bundled card records."""
    from mindlens.demo.model import POOLED
    from mindlens.demo.train import RECIPES

    card = json.loads((ASSETS / f"{name}.json").read_text())
    recipe, info = RECIPES[name], card["training"]
    kwargs = {"pooled": POOLED, **card["factory_kwargs"]}
    assert kwargs == {"classes": 2, **recipe["arch"]}
    assert (info["train_size"], info["epochs"], info["batch"], info["lr"]) == (
        recipe["n_train"], recipe["epochs"], recipe["batch"], recipe["lr"])
    assert info.get("lesion_weight", 0.0) == recipe.get("lesion_weight", 0.0)
    if "init" in recipe:  # fine-tuned: the card records the stage-1 recipe too
        stage1, pre = recipe["init"], info["fine_tuned_from"]
        assert pre["factory_kwargs"] == stage1["arch"]
        assert (pre["n_train"], pre["epochs"], pre["batch"], pre["lr"]) == (
            stage1["n_train"], stage1["epochs"], stage1["batch"], stage1["lr"])


def test_gradcam_pointing_counts_the_diseased_eyes():
    """The pointing game of :func:`gradcam_pointing` is the library's metric on Grad-CAM for
    class diseased over the diseased eyes only."""
    from mindlens.demo.train import gradcam_pointing
    from mindlens.metrics import pointing_game

    clf = load_retina_model()
    images, labels, masks = retina.generate(12, seed=FRESH_SEED)
    got = gradcam_pointing(clf, images, labels, masks, tolerance=4, batch=5)
    sick = labels == 1
    maps = mindlens.explain(clf, list(images[sick]), "gradcam", target=1).maps[:, 0]
    want = pointing_game(maps, torch.from_numpy(masks[sick]), 4).mean().item()
    assert got["diseased_images"] == sick.sum() == 6
    assert got["pointing_game"] == pytest.approx(want)
    assert got["layer"] == "features" and got["feature_map"] == [32, 32]
    assert got["tolerance_px"] == 4.0 and 0 <= got["relevance_mass"] <= 1
