"""The new methods in ``mindlens.evaluate``: each gets a criteria-table row with its
measured cost and access level (RISE as a black-box method)."""

from __future__ import annotations

import warnings

import torch
from torch import nn

import mindlens
from mindlens.evaluate import evaluate


def test_evaluate_rows_for_ig_smoothgrad_ixg_and_rise() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 4)).eval()
    clf = mindlens.Classifier(net, (16, 16))
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    params = {"integrated_gradients": {"n_steps": 4, "delta_tolerance": 1e9},
              "smoothgrad": {"n": 3}, "rise": {"n_masks": 20, "s": 4}}
    names = ["input_x_gradient", "integrated_gradients", "smoothgrad", "rise"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = evaluate(clf, images, methods=names, params=params, steps=4,
                         sensitivity_samples=1, sanity_layers=0, batch_size=2)
    rows = {r["method"]: r for r in table.rows}
    assert list(rows) == names and all(r["status"] == "ok" for r in rows.values())
    f = {n: rows[n]["figures"] for n in names}
    assert f["integrated_gradients"]["forward"] == 2 + 4 and f["smoothgrad"]["forward"] == 4
    assert f["rise"]["forward"] == 21 and f["rise"]["backward"] == 0
    assert f["rise"]["access"] == "black box" and f["input_x_gradient"]["access"] == "gradients"
    assert f["rise"]["native_px_per_cell"] > 1 and f["input_x_gradient"]["native_px_per_cell"] == 1
    assert "| rise |" in table.to_markdown()


def test_cli_methods_lists_them() -> None:
    from typer.testing import CliRunner

    from mindlens.cli import app
    result = CliRunner().invoke(app, ["methods"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in ("input_x_gradient", "integrated_gradients", "smoothgrad", "rise"):
        assert name in result.output
