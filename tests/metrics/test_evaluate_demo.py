"""``mindlens evaluate --demo retina``: no files needed, the localization section against the
lesion masks (diseased eyes only), and the colour-bias grade from the colour benchmark."""

from __future__ import annotations

import json
import re

import pytest
import torch
from typer.testing import CliRunner

from mindlens.cli import app
from mindlens.evaluate import chance_levels


def test_evaluate_demo_writes_the_localization_section(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "eval"
    res = CliRunner().invoke(app, ["evaluate", "--demo", "retina", "--n", "4", "--methods",
                                   "saliency,gradcam", "--steps", "4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    html = (out / "criteria.html").read_text()
    assert "Localization" in html and "diseased eyes" in html
    assert re.search(r"Gradient saliency&#39;s strongest point fell within 4 px of a lesion "
                     r"in \d+% of diseased eyes", html)
    assert "a point drawn at random lands there" in html
    table = json.loads((out / "criteria.json").read_text())
    sal, cam = table["rows"]
    assert sal["figures"]["images"] == 4 and sal["figures"]["images_with_mask"] == 2
    for row in (sal, cam):
        assert 0 <= row["figures"]["pointing_game"] <= 1
        assert 0 <= row["figures"]["relevance_mass"] <= 1
    assert isinstance(sal["figures"]["colour_auroc"], float)  # measured by default
    assert sal["grades"]["colour bias"] == "++"
    assert cam["measured"]["colour bias"]["value"] == "cannot show"
    assert cam["grades"]["colour bias"] == "-"
    assert 0 < table["baselines"]["relevance_mass"] < table["baselines"]["pointing_game"] < 1


def test_chance_levels_by_hand():
    m = torch.zeros(10, 10, dtype=torch.bool)
    m[4, 4] = True
    base = chance_levels([m, torch.zeros(10, 10, dtype=torch.bool)], tolerance=1.5)
    # within distance < 1.5 of (4, 4): the 3x3 block; the empty mask is left out
    # the centre of a 10x10 image is pixel (4, 4): a map peaking there hits
    assert base == pytest.approx({"pointing_game": 9 / 100, "relevance_mass": 1 / 100,
                                  "centre_point": 1.0, "images": 1, "tolerance_px": 1.5})
    assert chance_levels([m], 0)["pointing_game"] == 1 / 100
