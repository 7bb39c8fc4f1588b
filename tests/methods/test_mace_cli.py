"""``mindlens mace train`` through the Typer app, on a model card and a folder of PNGs."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from mindlens.methods.mace import load_unit
from mindlens.methods.mace.cli import app


@pytest.fixture(autouse=True)
def restore_threads():
    """``--threads`` sets torch's thread count for the process: put it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def make_card(root: Path) -> Path:
    (root / "tinynet.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class Tiny(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
                self.fc = nn.Linear(4, 2)

            def forward(self, x):
                return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))

        def build():
            return Tiny()
    """))
    torch.manual_seed(0)
    weights = {"conv.weight": torch.randn(4, 3, 3, 3), "conv.bias": torch.randn(4),
               "fc.weight": torch.randn(2, 4), "fc.bias": torch.zeros(2)}
    save_file(weights, str(root / "w.safetensors"))
    card = root / "card.json"
    card.write_text(json.dumps({"factory": "tinynet:build", "weights": "w.safetensors",
                                "input_size": [8, 8], "labels": ["a", "b"]}))
    return card


def test_cli_trains_a_unit_and_reports_errors(tmp_path) -> None:
    card = make_card(tmp_path)
    data = tmp_path / "data" / "some_class"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(
            data / f"{i}.png")
    out = tmp_path / "unit.safetensors"
    args = ["train", "--model", str(card), "--data", str(tmp_path / "data"), "--out",
            str(out), "--epochs", "2", "--concepts", "2", "--hidden", "8", "--prototypes", "1",
            "--threads", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "fidelity" in result.output
    tu = load_unit(out)
    assert tu.meta["train"]["images"] == 6 and tu.unit.config.classes == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    args[4] = str(empty)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "no images found" in result.output
