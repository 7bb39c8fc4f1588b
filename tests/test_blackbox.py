"""Black-box models: callables and ONNX files run by perturbation methods, refused by
methods that need gradients or layers."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import mindlens
from mindlens.errors import ModelError, NotApplicableError
from mindlens.methods.perturbation.occlusion import Occlusion
from mindlens.targets import Targets


def test_callable_black_box_gives_same_occlusion_map(resnet20):
    module = resnet20.module

    def probs(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(batch)).softmax(1).numpy()

    box = mindlens.Classifier(mindlens.BlackBox(probs, outputs="probs", numpy=True),
                              (32, 32), mean=resnet20.mean, std=resnet20.std)
    assert box.black_box
    x = torch.randn(1, 3, 32, 32)
    params = {"window": 8, "stride": 8, "score": "prob"}
    a = Occlusion(**params).explain(resnet20, x, Targets(top_k=2))
    b = Occlusion(**params).explain(box, x, Targets(top_k=2))
    assert torch.equal(a.targets, b.targets)
    torch.testing.assert_close(b.maps, a.maps, rtol=0, atol=1e-6)
    for name in ("saliency", "gradcam"):
        with pytest.raises(NotApplicableError, match="black box"):
            mindlens.explain(box, x, name)


def export(module: nn.Module, path, shape) -> None:
    kwargs = {"input_names": ["x"], "output_names": ["y"],
              "dynamic_axes": {"x": {0: "batch"}, "y": {0: "batch"}}}
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notes
        warnings.simplefilter("ignore")
        torch.onnx.export(module, torch.zeros(1, *shape), str(path), dynamo=False, **kwargs)


def test_onnx_export_gives_same_occlusion_map(resnet20, tmp_path):
    pytest.importorskip("onnxruntime")
    export(resnet20.module.eval(), tmp_path / "resnet20.onnx", (3, 32, 32))
    card = {"onnx": "resnet20.onnx", "input_size": [32, 32], "channels": 3,
            "mean": list(resnet20.mean), "std": list(resnet20.std),
            "labels": list(resnet20.labels)}
    (tmp_path / "card.json").write_text(json.dumps(card))
    onnx_clf = mindlens.load_model(tmp_path / "card.json")
    assert onnx_clf.black_box
    x = torch.randn(2, 3, 32, 32)
    params = {"window": 6, "stride": 4, "score": "logit", "batch_size": 16}
    ref = Occlusion(**params).explain(resnet20, x, Targets(top_k=2))
    got = Occlusion(**params).explain(onnx_clf, x, Targets(top_k=2))
    assert torch.equal(ref.targets, got.targets)
    scale = ref.maps.abs().max()
    torch.testing.assert_close(got.maps, ref.maps, rtol=0, atol=1e-5 * float(scale))
    with pytest.raises(NotApplicableError, match="cannot give them"):
        mindlens.explain(onnx_clf, x, "saliency")


def test_onnx_that_is_not_a_classifier(tmp_path):
    pytest.importorskip("onnxruntime")
    export(nn.Conv2d(3, 4, 3).eval(), tmp_path / "conv.onnx", (3, 16, 16))
    card = {"onnx": "conv.onnx", "input_size": [16, 16]}
    (tmp_path / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="not a classifier"):
        mindlens.load_model(tmp_path / "card.json")
    with pytest.raises(mindlens.InputError, match="ONNX file not found"):
        mindlens.load_model({"onnx": "missing.onnx", "input_size": [16, 16]}, tmp_path)
