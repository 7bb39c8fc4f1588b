"""A tiny GAP-headed CNN that tests write into a model card folder."""

SOURCE = '''
import torch
from torch import nn
import torch.nn.functional as F


class Tiny(nn.Module):
    def __init__(self, channels=3, classes=3):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def build(channels=3, classes=3):
    torch.manual_seed(0)
    return Tiny(channels, classes)
'''


def write_card(folder, **overrides):
    """Write tinynet_mod.py, its safetensors weights and card.json into ``folder``."""
    import json
    import sys

    from safetensors.torch import save_file

    (folder / "tinynet_mod.py").write_text(SOURCE)
    sys.path.insert(0, str(folder))
    try:
        import importlib

        mod = importlib.import_module("tinynet_mod")
        model = mod.build()
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("tinynet_mod", None)
    save_file(model.state_dict(), str(folder / "tiny.safetensors"))
    card = {"factory": "tinynet_mod:build", "weights": "tiny.safetensors",
            "input_size": [16, 16], "channels": 3, "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25], "labels": ["cat", "dog", "bird"]}
    card.update(overrides)
    path = folder / "card.json"
    path.write_text(json.dumps(card))
    return path
