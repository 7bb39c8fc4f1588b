"""Tiny modern CNNs written the way their reference code writes them (random weights).

- :class:`EfficientNetish`: torchvision ``efficientnet.py`` style -- ``Conv2dNormActivation``
  stacks, ``MBConv`` with expansion, depthwise conv, ``SqueezeExcitation`` (functional
  ``scale * input`` with an ``adaptive_avg_pool2d`` squeeze), SiLU, stochastic depth
  (identity in eval) and ``result += input``;
- :class:`ConvNeXtish`: torchvision ``convnext.py`` style -- ``LayerNorm2d`` (an
  ``nn.LayerNorm`` subclass that permutes around ``F.layer_norm``), ``CNBlock`` (depthwise
  7x7, ``Permute``, channels-last ``LayerNorm`` and ``Linear``, GELU, a ``layer_scale``
  parameter multiplied in, ``result += input``) and a timm-style block (``x.mul(gamma)``,
  ``F.gelu``, ``nn.GroupNorm``), head ``LayerNorm2d -> Flatten -> Linear``;
- :class:`MobileNetV3ish`: torchvision ``mobilenetv3.py`` style -- Hardswish/ReLU,
  SE with a Hardsigmoid gate, timm-style pooling ``x.mean((2, 3), keepdim=True)``;
- :class:`ModernToy`: the property-test model of spec ``methods-more.md`` section 19.9;
- :func:`multilabel` (4 findings, one sigmoid each) and :func:`single_logit` (``[B, 1]``).

Each is ``eval()``; BatchNorm statistics are randomised so that merging is exercised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import mindlens


# -- torchvision-style building blocks ---------------------------------------------------
class Permute(nn.Module):
    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.permute(x, self.dims)


class LayerNorm2d(nn.LayerNorm):
    """torchvision ``convnext.LayerNorm2d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNormAct(nn.Sequential):
    """torchvision ``Conv2dNormActivation``."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.SiLU) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups,
                                             bias=False), nn.BatchNorm2d(cout)]
        if act is not None:
            layers.append(act(inplace=True) if act in (nn.ReLU, nn.SiLU, nn.Hardswish)
                          else act())
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """torchvision ``ops.misc.SqueezeExcitation``."""

    def __init__(self, cin: int, csq: int, activation: type[nn.Module] = nn.ReLU,
                 scale_activation: type[nn.Module] = nn.Sigmoid) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(cin, csq, 1)
        self.fc2 = nn.Conv2d(csq, cin, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.avgpool(x)
        scale = self.fc1(scale)
        scale = self.activation(scale)
        scale = self.fc2(scale)
        return self.scale_activation(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self._scale(x)
        return scale * x


class StochasticDepth(nn.Module):
    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty(x.shape[0], 1, 1, 1, device=x.device).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


# -- EfficientNet ------------------------------------------------------------------------
class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, k: int, stride: int) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        mid = cin * expand
        layers: list[nn.Module] = []
        if mid != cin:
            layers.append(ConvNormAct(cin, mid, 1))
        layers += [ConvNormAct(mid, mid, k, stride, groups=mid),
                   SqueezeExcitation(mid, max(1, cin // 4), nn.SiLU),
                   ConvNormAct(mid, cout, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result = self.stochastic_depth(result)
            result += x
        return result


class EfficientNetish(nn.Module):
    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            ConvNormAct(3, 8, 3, 2),
            MBConv(8, 8, 1, 3, 1),
            MBConv(8, 12, 4, 3, 2),
            MBConv(12, 12, 4, 5, 1),
            ConvNormAct(12, 32, 1),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2, inplace=True), nn.Linear(32, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


# -- ConvNeXt ----------------------------------------------------------------------------
class CNBlock(nn.Module):
    """torchvision ``convnext.CNBlock``."""

    def __init__(self, dim: int, layer_scale: float = 1e-6) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True),
            Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim, bias=True),
            nn.GELU(),
            nn.Linear(4 * dim, dim, bias=True),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)
        self.stochastic_depth = StochasticDepth(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.layer_scale * self.block(x)
        result = self.stochastic_depth(result)
        result += x
        return result


class TimmBlock(nn.Module):
    """timm ``ConvNeXtBlock`` flavour: ``x.mul(gamma.reshape(...))``, functional GELU, a
    GroupNorm in place of the LayerNorm, the MLP as 1x1 convolutions."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.GroupNorm(2, dim)
        self.fc1 = nn.Conv2d(dim, 2 * dim, 1)
        self.fc2 = nn.Conv2d(2 * dim, dim, 1)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.fc2(F.gelu(self.fc1(self.norm(self.conv_dw(x)))))
        x = x.mul(self.gamma.reshape(1, -1, 1, 1))
        return x + shortcut


class ConvNeXtish(nn.Module):
    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 2, 2), LayerNorm2d(8, eps=1e-6)),
            CNBlock(8, layer_scale=0.5),
            nn.Sequential(LayerNorm2d(8, eps=1e-6), nn.Conv2d(8, 16, 2, 2)),
            TimmBlock(16),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(LayerNorm2d(16, eps=1e-6), nn.Flatten(1),
                                        nn.Linear(16, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(x)))


# -- MobileNetV3 -------------------------------------------------------------------------
class InvertedResidual(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, k: int, se: bool, hs: bool,
                 stride: int) -> None:
        super().__init__()
        act = nn.Hardswish if hs else nn.ReLU
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if mid != cin:
            layers.append(ConvNormAct(cin, mid, 1, act=act))
        layers.append(ConvNormAct(mid, mid, k, stride, groups=mid, act=act))
        if se:
            layers.append(SqueezeExcitation(mid, max(1, mid // 4),
                                            scale_activation=nn.Hardsigmoid))
        layers.append(ConvNormAct(mid, cout, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result += x
        return result


class MobileNetV3ish(nn.Module):
    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            ConvNormAct(3, 8, 3, 2, act=nn.Hardswish),
            InvertedResidual(8, 8, 8, 3, True, False, 2),
            InvertedResidual(8, 24, 12, 3, False, False, 1),
            InvertedResidual(12, 36, 12, 5, True, True, 1),
            ConvNormAct(12, 48, 1, act=nn.Hardswish),
        )
        self.classifier = nn.Sequential(nn.Linear(48, 32), nn.Hardswish(inplace=True),
                                        nn.Dropout(0.2, inplace=True), nn.Linear(32, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean((2, 3), keepdim=True)  # timm-style pooling
        return self.classifier(torch.flatten(x, 1))


# -- the spec's property-test model (methods-more.md section 19.9) ------------------------
class ModernToy(nn.Module):
    def __init__(self, classes: int = 5, bias: bool = True) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=bias)
        self.stem_norm = LayerNorm2d(8, bias=bias)
        self.a_dw = nn.Conv2d(8, 8, 7, padding=3, groups=8, bias=bias)
        self.a_norm = nn.LayerNorm(8, bias=bias)
        self.a_fc1 = nn.Linear(8, 32, bias=bias)
        self.a_fc2 = nn.Linear(32, 8, bias=bias)
        self.a_scale = nn.Parameter(torch.empty(8, 1, 1).uniform_(0.5, 1.5))
        self.b_pw = nn.Conv2d(8, 16, 1, bias=bias)
        self.b_norm = nn.GroupNorm(4, 16, affine=True)
        self.b_dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=bias)
        self.se1 = nn.Conv2d(16, 4, 1, bias=bias)
        self.se2 = nn.Conv2d(4, 16, 1, bias=bias)
        self.b_proj = nn.Conv2d(16, 8, 1, bias=bias)
        self.head = nn.Linear(8, classes, bias=bias)
        if not bias:
            with torch.no_grad():
                self.b_norm.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_norm(self.stem(x))
        y = self.a_dw(x).permute(0, 2, 3, 1)
        y = self.a_fc2(F.gelu(self.a_fc1(self.a_norm(y)))).permute(0, 3, 1, 2)
        x = self.a_scale * y + x
        y = F.hardswish(self.b_dw(F.silu(self.b_norm(self.b_pw(x)))))
        s = torch.sigmoid(self.se2(F.silu(self.se1(y.mean((2, 3), keepdim=True)))))
        y = F.mish(self.b_proj(y * s))
        x = x + y
        return self.head(x.mean((-2, -1)))


# -- classifiers -------------------------------------------------------------------------
def _randomise_batchnorm(model: nn.Module, bias: bool = True) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                if bias:
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.bias.uniform_(-0.1, 0.1)


def zero_biases(model: nn.Module) -> nn.Module:
    """The bias-free variant (in place): every bias, norm shift and BatchNorm mean 0."""
    with torch.no_grad():
        for m in model.modules():
            for name in ("bias", "running_mean"):
                t = getattr(m, name, None)
                if isinstance(t, torch.Tensor):
                    t.zero_()
    return model


BUILDERS = {"efficientnet": EfficientNetish, "convnext": ConvNeXtish,
            "mobilenetv3": MobileNetV3ish, "modern_toy": ModernToy}
SIZES = {"efficientnet": (32, 32), "convnext": (16, 16), "mobilenetv3": (32, 32),
         "modern_toy": (12, 12)}


def build(name: str, seed: int = 0, dtype: torch.dtype = torch.float64,
          output: str = "softmax", classes: int = 5) -> mindlens.Classifier:
    """One of :data:`BUILDERS` as a classifier, ``eval()``, in ``dtype``."""
    torch.manual_seed(seed)
    model = BUILDERS[name](classes)
    _randomise_batchnorm(model)
    model = model.to(dtype).eval()
    return mindlens.Classifier(model, SIZES[name], 3, name=name, output=output)


FINDINGS = ["haemorrhage", "exudate", "drusen", "scar"]


def multilabel(seed: int = 0, dtype: torch.dtype = torch.float64) -> mindlens.Classifier:
    """An EfficientNet-style multi-label model: 4 findings, one sigmoid each."""
    clf = build("efficientnet", seed, dtype, output="sigmoid", classes=len(FINDINGS))
    clf.labels = list(FINDINGS)
    return clf


def single_logit(seed: int = 0, dtype: torch.dtype = torch.float64) -> mindlens.Classifier:
    """A MobileNetV3-style lesion detector with one logit ``[B, 1]``."""
    clf = build("mobilenetv3", seed, dtype, output="single_logit", classes=1)
    clf.labels = ["lesion"]
    return clf


def multilabel_module() -> nn.Module:
    """Model-card factory (float32) for :func:`multilabel`."""
    return multilabel(dtype=torch.float32).module


def single_logit_module() -> nn.Module:
    """Model-card factory (float32) for :func:`single_logit`."""
    return single_logit(dtype=torch.float32).module
