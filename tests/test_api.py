"""mindlens.explain / explain_all on files and tensors; Explanation round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mindlens
from mindlens.methods import names

from .conftest import asset_images


def test_explain_files_equals_explain_preprocessed_tensor(resnet20) -> None:
    paths = asset_images("foolbox/cifar10_0*")[:2]
    assert len(paths) == 2
    x = resnet20.preprocess(paths)
    assert x.shape == (2, 3, 32, 32)
    a = mindlens.explain(resnet20, [str(p) for p in paths], "gradcam")
    b = mindlens.explain(resnet20, x, "gradcam")
    assert torch.equal(a.maps, b.maps) and torch.equal(a.targets, b.targets)
    truth = [int(p.stem.rsplit("_", 1)[1]) for p in paths]
    assert a.targets[:, 0].tolist() == truth  # the real model gets these right


def test_explain_all_runs_every_method_once(resnet20) -> None:
    x = torch.randn(1, 3, 32, 32)
    foundation = ["saliency", "guided_backprop", "deconvnet", "gradcam", "cam",
                  "guided_gradcam"]
    assert set(foundation) <= set(names())
    out = mindlens.explain_all(resnet20, x, foundation, top_k=2)
    assert list(out) == foundation
    for name, e in out.items():
        assert e.method == name and e.maps.shape == (1, 2, 32, 32)
        assert e.targets.shape == e.scores.shape == e.probs.shape == (1, 2)
        assert torch.isfinite(e.maps).all() and e.cost.seconds > 0


def test_explanation_save_and_load(tmp_path: Path, resnet20) -> None:
    e = mindlens.explain(resnet20, torch.randn(2, 3, 32, 32), "guided_gradcam", top_k=2)
    e.save(tmp_path / "e.pt")
    back = mindlens.Explanation.load(tmp_path / "e.pt")
    assert torch.equal(back.maps, e.maps) and torch.equal(back.raw, e.raw)
    assert back.cost == e.cost and back.native_shape == e.native_shape
    assert back.params == e.params and back.map(1, 1).shape == (32, 32)
    with pytest.raises(ValueError, match="do not match"):
        mindlens.Explanation("x", torch.zeros(2, 1, 4, 4), torch.zeros(2, 2, dtype=torch.long),
                             torch.zeros(2, 2), torch.zeros(2, 2), False)


def test_every_method_describes_itself() -> None:
    for name in names():
        cls = mindlens.methods.get(name)
        assert cls.meaning.endswith(".") and cls.reference and cls.title
        assert "needs" in cls.describe()
