"""mindlens.load_model: factory + safetensors / .pt, TorchScript, refused pickles, bad cards."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import mindlens

FACTORY = '''
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))

def build(classes=3):
    return Net(classes)
'''


class Opaque:
    """Not a tensor: a pickle holding it needs more than weights_only."""

    def __init__(self) -> None:
        self.payload = 1


def write_card(folder: Path, **fields) -> tuple[Path, str]:
    """A factory module with a unique name (modules stay cached in sys.modules)."""
    mod = f"cardnet_{uuid.uuid4().hex[:8]}"
    (folder / f"{mod}.py").write_text(FACTORY)
    card = {"factory": f"{mod}:build", "input_size": [8, 8], "channels": 3,
            "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], **fields}
    path = folder / "card.json"
    path.write_text(json.dumps(card))
    return path, mod


def reference_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {"conv.weight": torch.randn(4, 3, 3, 3), "conv.bias": torch.randn(4),
            "fc.weight": torch.randn(3, 4), "fc.bias": torch.randn(3)}


@pytest.mark.parametrize("fmt", ["safetensors", "pt", "pt_wrapped"])
def test_factory_with_weights(tmp_path: Path, fmt: str) -> None:
    state = reference_state()
    if fmt == "safetensors":
        save_file(state, str(tmp_path / "w.safetensors"))
        weights = "w.safetensors"
    else:
        wrapped = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
        torch.save(wrapped if fmt == "pt_wrapped" else state, tmp_path / "w.pt")
        weights = "w.pt"
    (tmp_path / "labels.txt").write_text("cat\ndog\n\nbird\n")
    card, _ = write_card(tmp_path, weights=weights, labels="labels.txt")
    clf = mindlens.load_model(card)
    assert clf.name == "card" and clf.labels == ["cat", "dog", "bird"]
    assert clf.input_size == (8, 8) and not clf.module.training
    for k, v in state.items():
        assert torch.equal(clf.module.state_dict()[k], v)
    e = mindlens.explain(clf, torch.randn(1, 3, 8, 8), "gradcam")
    assert e.maps.shape == (1, 1, 8, 8)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_card(tmp_path: Path) -> None:
    _card, mod = write_card(tmp_path)
    import importlib
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        net = importlib.import_module(mod).build().eval()
    finally:
        sys.path.remove(str(tmp_path))
    torch.jit.save(torch.jit.trace(net, torch.randn(1, 3, 8, 8)), str(tmp_path / "m.pt"))
    (tmp_path / "ts.json").write_text(json.dumps(
        {"torchscript": "m.pt", "input_size": [8, 8], "labels": ["a", "b", "c"]}))
    clf = mindlens.load_model(tmp_path / "ts.json")
    assert clf.scripted
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(clf(x), net(x))
    with pytest.raises(mindlens.NotApplicableError, match="TorchScript"):
        mindlens.explain(clf, x, "gradcam")
    with pytest.raises(mindlens.NotApplicableError, match="TorchScript"):
        mindlens.explain(clf, x, "guided_backprop")
    assert mindlens.explain(clf, x, "saliency").maps.shape == (2, 1, 8, 8)


def test_pickle_needing_more_than_weights_is_refused(tmp_path: Path) -> None:
    torch.save({"conv.weight": torch.zeros(1), "extra": Opaque()}, tmp_path / "evil.pt")
    card, _ = write_card(tmp_path, weights="evil.pt")
    with pytest.raises(mindlens.ModelError, match=r"refused .*arbitrary code.*state_dict"):
        mindlens.load_model(card)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_bad_cards(tmp_path: Path) -> None:
    with pytest.raises(mindlens.InputError, match="model card not found"):
        mindlens.load_model(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(mindlens.InputError, match="not valid JSON"):
        mindlens.load_model(tmp_path / "bad.json")
    with pytest.raises(mindlens.InputError, match="lacks input_size"):
        mindlens.load_model({"factory": "x:y"})
    with pytest.raises(mindlens.InputError, match='needs "factory"'):
        mindlens.load_model({"input_size": [8, 8]})
    with pytest.raises(mindlens.InputError, match=r"package\.module:function"):
        mindlens.load_model({"input_size": [8, 8], "factory": "nocolon"})
    with pytest.raises(mindlens.ModelError, match="cannot import 'no_such_mod"):
        mindlens.load_model({"input_size": [8, 8], "factory": "no_such_mod_xyz:build"})
    card, _mod = write_card(tmp_path, weights="missing.pt")
    with pytest.raises(mindlens.InputError, match="weights file not found"):
        mindlens.load_model(card)
    torch.save({"conv.weight": torch.zeros(2)}, tmp_path / "small.pt")
    card, _ = write_card(tmp_path, weights="small.pt")
    with pytest.raises(mindlens.ModelError, match="do not fit the model"):
        mindlens.load_model(card)
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 20)
    card, _ = write_card(tmp_path, weights="broken.safetensors")
    with pytest.raises(mindlens.ModelError, match="cannot read safetensors"):
        mindlens.load_model(card)
    (tmp_path / "ts.json").write_text(json.dumps({"torchscript": "nope.pt", "input_size": [8, 8]}))
    with pytest.raises(mindlens.InputError, match="TorchScript file not found"):
        mindlens.load_model(tmp_path / "ts.json")
    (tmp_path / "junk.pt").write_bytes(b"junk" * 10)
    (tmp_path / "ts2.json").write_text(json.dumps({"torchscript": "junk.pt", "input_size": [8, 8]}))
    with pytest.raises(mindlens.ModelError, match="cannot load TorchScript"):
        mindlens.load_model(tmp_path / "ts2.json")
