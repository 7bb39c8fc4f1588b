"""The colour-shortcut benchmark: the colour-cue model really reads the colour, and the net
colour share of the explanations tells it from its control for methods with per-channel
relevance; purely spatial maps cannot show it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mindlens.demo import ASSETS, colour, load_demo_model
from mindlens.metrics.colour import auroc, net_colour_share

FRESH_SEED = 4242  # the colour models were trained on seed 0 and tested on seed 1


pytestmark = pytest.mark.usefixtures("one_thread")


def accuracy(name: str, images: np.ndarray, labels: np.ndarray) -> float:
    clf = load_demo_model(name)
    pred = clf.predict(clf.preprocess(list(images))).argmax(1).numpy()
    return float((pred == labels).mean())


def test_cast_is_slight_and_only_on_the_retina():
    plain, _, _ = colour.retina.generate(4, FRESH_SEED)
    images, labels, _, cued = colour.generate(4, FRESH_SEED, split="train")
    assert (cued == (labels == 1)).all()
    diff = images.astype(int) - plain.astype(int)
    assert (diff[~cued] == 0).all() and (diff[..., 0] == 0).all()  # red untouched
    background = plain.max(axis=-1) < 10
    assert (diff[background] == 0).all()
    assert 0 < diff[cued].max() <= round(255 * max(colour.CAST)) + 1


@pytest.mark.parametrize("name", ["colour", "colour_control"])
def test_cards(name):
    card = json.loads((ASSETS / f"{name}.json").read_text())
    assert (ASSETS / card["weights"]).stat().st_size < 2**20
    info = card["training"]
    assert info["seed"] != FRESH_SEED and info["test_seed"] != FRESH_SEED
    assert "test_accuracy_no_cast" in info and info["seconds"] < 120


def test_colour_model_uses_the_colour_and_the_control_does_not():
    imgs = {s: colour.generate(100, FRESH_SEED, split=s) for s in ("train", "test", "swapped")}
    acc = {s: accuracy("colour", x, y) for s, (x, y, _, _) in imgs.items()}
    assert acc["train"] >= 0.95  # cast on the diseased images, as in training
    assert acc["test"] <= 0.65  # cast removed: near chance
    assert acc["swapped"] <= 0.2  # cast moved to the healthy images: mostly wrong
    x, y, _, _ = imgs["test"]
    assert accuracy("colour", colour.greyscale(x), y) <= 0.65
    ctrl = {s: accuracy("colour_control", x, y) for s, (x, y, _, _) in imgs.items()}
    assert ctrl["test"] >= 0.65 and abs(ctrl["swapped"] - ctrl["test"]) <= 0.1


def test_net_colour_share_by_hand():
    raw = torch.zeros(3, 3, 2, 2, dtype=torch.float64)
    raw[0] = 1.0  # all channels agree: brightness only
    raw[1, 0], raw[1, 1] = 1.0, -1.0  # red up, green down: pure colour
    raw[2, 0, 0, 0] = 3.0  # net (3, 0, 0): chroma |2|+|1|+|1| = 4, common 3
    assert net_colour_share(raw).tolist() == pytest.approx([0.0, 1.0, 4 / 7])
    assert net_colour_share(raw[:, :1]) is None and net_colour_share(None) is None
    assert auroc(torch.tensor([2.0, 3.0]), torch.tensor([1.0, 2.0])) == pytest.approx(0.875)


@pytest.mark.parametrize(("method", "params"), [
    ("saliency", {}), ("deconvnet", {}), ("lrp", {"composite": "epsilon"})])
def test_input_space_methods_reveal_the_colour_shortcut(method, params):
    res = colour.benchmark(method, params, n=24)
    assert res["colour_auroc"] >= 0.9, res
    assert res["colour_share_cue"] > res["colour_share_control"]


def test_flat_first_layer_spreads_relevance_evenly_and_cannot_show_it():
    res = colour.benchmark("lrp", {}, n=8)  # epsilon_plus_flat: the flat rule at the input
    assert res["colour_share_cue"] == pytest.approx(0.0, abs=1e-9)
    assert res["colour_auroc"] < 0.75


@pytest.mark.parametrize("method", ["cam", "gradcam"])
def test_spatial_maps_cannot_show_it(method):
    assert colour.benchmark(method, n=4) == {"colour_auroc": "cannot show"}
