"""The command line on volumes: a Conv3d model card with input_size [D, H, W], a NIfTI
file, occlusion and Grad-CAM end to end, slice montages in the PNG and the report."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mindlens.cli import app

runner = CliRunner()

SOURCE = '''
from torch import nn


def build(classes=2):
    import torch

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
        nn.Conv3d(4, 6, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(6, classes))
'''


def write_card3d(folder, size=(12, 16, 16)):
    """tiny3d_mod.py, its weights and card3d.json in ``folder``."""
    from safetensors.torch import save_file

    (folder / "tiny3d_mod.py").write_text(SOURCE)
    sys.path.insert(0, str(folder))
    try:
        import importlib

        model = importlib.import_module("tiny3d_mod").build()
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("tiny3d_mod", None)
    save_file(model.state_dict(), str(folder / "tiny3d.safetensors"))
    card = {"factory": "tiny3d_mod:build", "weights": "tiny3d.safetensors",
            "input_size": list(size), "channels": 1, "mean": [0.5], "std": [0.25],
            "labels": ["healthy", "atrophy"]}
    path = folder / "card3d.json"
    path.write_text(json.dumps(card))
    return path


def blob_volume(shape=(20, 24, 24), seed=0) -> np.ndarray:
    """A smooth 'scan': a bright ellipsoid with a dark spot, plus noise, in scanner units."""
    rng = np.random.default_rng(seed)
    d, h, w = np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij")
    vol = 800.0 * ((d / 0.8) ** 2 + (h / 0.7) ** 2 + (w / 0.7) ** 2 < 1)
    vol -= 500.0 * ((d - 0.2) ** 2 + (h + 0.2) ** 2 + w**2 < 0.1)
    return (vol + rng.normal(0, 20, shape)).astype(np.float32)


@pytest.fixture
def volume_setup(tmp_path):
    nib = pytest.importorskip("nibabel")
    card = write_card3d(tmp_path)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(blob_volume(), np.eye(4)), str(path))
    return card, path, tmp_path


def test_explain_volume_end_to_end(volume_setup):
    card, path, tmp = volume_setup
    out = tmp / "out"
    result = runner.invoke(app, ["explain", str(path), "--model", str(card), "--methods",
                                 "occlusion,gradcam", "--top-k", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    arrays = np.load(out / "scan.npz")
    assert arrays["occlusion"].shape == arrays["gradcam"].shape == (2, 12, 16, 16)
    assert np.isfinite(arrays["occlusion"]).all() and (arrays["gradcam"] >= 0).all()
    summary = json.loads((out / "summary.json").read_text())
    maps = {m["method"]: m for m in summary["images"]["scan"]["maps"]}
    assert maps["gradcam"]["native_shape"] == [6, 8, 8]
    assert maps["occlusion"]["label"] in ("healthy", "atrophy")
    png = np.asarray(Image.open(out / "scan.png"))
    assert png.shape[0] > png.shape[1]  # three montages stacked: input, occlusion, Grad-CAM
    html = (out / "report.html").read_text()
    assert html.count('data-method="gradcam"') == 2 and "12x16x16, 1 channel" in html
    assert 'class="panel wide"' in html and "evenly spaced slices" in html


def test_volume_with_baselines_and_a_2d_card_refuses_volumes(volume_setup):
    from .tinynet import write_card

    card, path, tmp = volume_setup
    out = tmp / "out"
    result = runner.invoke(app, ["explain", str(path), "--model", str(card), "--methods",
                                 "occlusion", "--baselines", "zero,mean", "--out", str(out)])
    assert result.exit_code == 0, result.output
    sens = json.loads((out / "summary.json").read_text())["images"]["scan"][
        "baseline_sensitivity"]
    assert sens["baselines"] == ["zero", "mean"] and len(sens["pairs"]) == 1
    assert -1 <= sens["pairs"][0]["pearson"][0] <= 1
    (tmp / "flat").mkdir()
    card2d = write_card(tmp / "flat")
    bad = runner.invoke(app, ["explain", str(path), "--model", str(card2d), "--out", str(out)])
    assert bad.exit_code == 2 and "is a volume" in bad.output
    assert "Traceback" not in bad.output


def test_volume_preprocess_and_gradcam_layer_auto(volume_setup):
    from mindlens.model_card import load_model

    card, path, _ = volume_setup
    clf = load_model(card)
    assert clf.volumetric and clf.input_size == (12, 16, 16)
    x = clf.preprocess(path)
    assert x.shape == (1, 1, 12, 16, 16)
    px = clf.spec.denormalize(x)
    assert float(px.min()) >= -1e-6 and float(px.max()) <= 1 + 1e-6  # own range -> [0, 1]
    assert clf.layer("auto")[0] == "4"  # the last ReLU on the 5-D feature map
    both = clf.preprocess([path, blob_volume(seed=1)[None]])
    assert both.shape == (2, 1, 12, 16, 16)
    torch.testing.assert_close(both[:1], x)
