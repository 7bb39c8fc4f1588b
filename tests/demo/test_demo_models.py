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


@pytest.mark.parametrize("name", ["retina", "shortcut"])
def test_card_weights_and_metadata(name):
    card = json.loads((ASSETS / f"{name}.json").read_text())
    assert card["factory"] == "mindlens.demo.model:build"
    assert card["labels"] == ["healthy", "diseased"] and card["input_size"] == [128, 128]
    assert (ASSETS / card["weights"]).stat().st_size < 5 * 2**20
    info = card["training"]
    assert info["seed"] != FRESH_SEED and info["test_seed"] != FRESH_SEED
    assert info["train_size"] > 0 and info["test_size"] >= 1000
    clf = mindlens.load_model(ASSETS / f"{name}.json")
    assert sum(p.numel() for p in clf.module.parameters()) < 300_000
    assert clf.layer("auto")[0] == "features"  # the last block's 16x16x64 output


def test_retina_model_is_accurate_on_fresh_images():
    torch.set_num_threads(2)
    clf = load_retina_model()
    images, labels, _ = retina.generate(1000, seed=FRESH_SEED)
    acc = (predict(clf, images) == labels).mean()
    assert acc >= 0.95, acc


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
