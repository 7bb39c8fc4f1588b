"""The demo screening networks: a small CNN whose head is global average pooling + linear.

A strided 5x5 stem and three 3x3 convolution blocks (convolution, batch norm, ReLU), with
max pooling after the first ``pooled`` blocks, turn a 128x128 fundus image into a feature
map ``features``; global average pooling and one linear layer give the two logits
(healthy, diseased). With this head CAM applies exactly (Zhou et al. 2016,
arXiv:1512.04150), and ``layer="auto"`` picks ``features`` for Grad-CAM.

- ``pooled=2`` (the default; the shortcut and colour models): pooling after the stem and
  after the second block, a 16x16x64 feature map (one cell per 8x8 pixels). About 62k
  parameters: small enough to train on two CPU cores in minutes.
- ``pooled=1`` (the retina model): pooling after the stem only, a 32x32x64 feature map
  (one cell per 4x4 pixels, the size of a lesion). The same parameters (a ``pooled=2``
  state dict loads), about 2.7x the compute.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

WIDTHS = (16, 32, 64, 64)
POOLED = 2  # blocks followed by max pooling


def _block(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, pool: bool = True
           ) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class RetinaNet(nn.Module):
    """Small CAM-ready CNN: ``features`` -> global average pooling -> ``classifier``."""

    def __init__(self, classes: int = 2, widths: tuple[int, ...] = WIDTHS,
                 pooled: int = POOLED) -> None:
        super().__init__()
        blocks = OrderedDict(block1=_block(3, widths[0], kernel=5, stride=2, pool=pooled > 0))
        for i in range(1, len(widths)):
            blocks[f"block{i + 1}"] = _block(widths[i - 1], widths[i], pool=i < pooled)
        self.features = nn.Sequential(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(widths[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def build(classes: int = 2, widths: tuple[int, ...] | list[int] = WIDTHS,
          pooled: int = POOLED) -> RetinaNet:
    """Factory named in the model cards (``"mindlens.demo.model:build"``)."""
    return RetinaNet(classes, tuple(widths), pooled)
