"""Composites: which rule each layer gets (after Zennit's ``composites.py``).

A :class:`Composite` is a stateless description: an ordered type map (first match wins),
a rule for the *first* linear-type layer in execution order, a name map, what element-wise
activations do (``"pass"`` or ``"gradient"``) and the stabiliser of sums and pooling.
Precedence: name map > first-layer rule > type map. Presets are registered by name:

============================  ====================  =========  =================
preset                        convolutions          dense      first layer
============================  ====================  =========  =================
``epsilon_plus_flat``         z+                    epsilon    flat
``epsilon_plus``              z+                    epsilon    --
``epsilon_gamma_box``         gamma (0.25)          epsilon    z^B (input range)
``epsilon_alpha2_beta1_flat`` alpha2-beta1          epsilon    flat
``epsilon_alpha2_beta1``      alpha2-beta1          epsilon    --
``epsilon``                   epsilon               epsilon    --
============================  ====================  =========  =================

Blocks of modern CNNs (spec ``methods-more.md`` section 19), the same in every preset:

- ``nn.Linear`` called on a feature map (ConvNeXt's channels-last pointwise convolutions,
  ``[B, H, W, C]``) is a 1x1 convolution and gets the preset's *convolution* rule; only a
  Linear on ``[B, features]`` is the dense head (a user entry for ``nn.Linear`` types
  applies to dense calls only; map channels-last Linears by name);
- LayerNorm / GroupNorm / RMSNorm (any layout): LRP-epsilon with the statistics constant,
  ``norm_rule="std_constant"`` (``sigma`` constant, mean kept: conservative) or
  ``"mean_std_constant"``; stabiliser ``sum_epsilon``;
- sigmoid gates (squeeze-and-excitation): ``gate_rule="gate_constant"`` (all relevance to
  the gated signal) or ``"uniform"`` (half to the gate branch);
- SiLU, GELU, Mish, Hardswish: identity (pass), also in ``epsilon``, whose other
  activations use the ordinary gradient (for these self-gating functions ``f(x) = x g(x)``
  the identity rule is LRP-0);
- layer scale ``lambda * x`` and other products with a constant: identity; ``x.mean(...)``
  and average pooling: the norm rule (proportional split).

BatchNorm layers that cannot be merged into a preceding layer get the epsilon rule as a
per-channel affine map in every preset. ``epsilon`` uses the ordinary gradient at
activations and ``epsilon=`` also for sums, so that with a tiny epsilon it is LRP-0,
i.e. gradient x input (Montavon et al. 2019, section 10.2). The other presets follow
Zennit (``Pass`` at activations, stabiliser 1e-6 for sums and pooling).

User maps: ``composite={nn.Conv2d: "gamma", "features.0.conv": Flat()}`` (types and
dotted names; values are :class:`~.rules.Rule` objects or rule names) on top of the
default preset, or ``get("epsilon").with_map({...})``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from ...errors import InputError
from .functional import GATE_RULES
from .norms import NORM_RULES
from .ops import BATCHNORM, CONV, LINEAR
from .rules import AlphaBeta, Epsilon, Flat, Gamma, Rule, ZBox, ZPlus, ensure_rule

TypeMap = tuple[tuple[tuple[type, ...], Rule], ...]


@dataclass(frozen=True)
class Composite:
    """Rule assignment; see the module docstring."""

    name: str
    type_map: TypeMap
    first: Rule | None = None
    first_types: tuple[type, ...] = CONV + LINEAR
    name_map: Mapping[str, Rule] = field(default_factory=dict)
    activations: str = "pass"
    sum_epsilon: float = 1e-6
    gate_rule: str = "gate_constant"
    norm_rule: str = "std_constant"

    def __post_init__(self) -> None:
        if self.gate_rule not in GATE_RULES:
            raise InputError(f"gate_rule must be one of {', '.join(GATE_RULES)}, got "
                             f"{self.gate_rule!r}")
        if self.norm_rule not in NORM_RULES:
            raise InputError(f"norm_rule must be one of {', '.join(NORM_RULES)}, got "
                             f"{self.norm_rule!r}")

    def rule_for(self, name: str, module: nn.Module, first: bool,
                 spatial: bool = False) -> Rule | None:
        """``spatial``: the layer was called on a feature map (``input.dim() > 2``); a
        Linear then takes the rule of a 1x1 convolution."""
        if name in self.name_map:
            return self.name_map[name]
        if first and self.first is not None and isinstance(module, self.first_types):
            return self.first
        if spatial and isinstance(module, LINEAR):
            for types, rule in self.type_map:
                if any(issubclass(nn.Conv2d, t) for t in types):
                    return rule
        for types, rule in self.type_map:
            if isinstance(module, types):
                return rule
        return None

    def with_map(self, mapping: Mapping[Any, Rule | str]) -> Composite:
        """Add user entries: module types (put before the preset's type map) and names."""
        types: list[tuple[tuple[type, ...], Rule]] = []
        names = dict(self.name_map)
        for key, value in mapping.items():
            rule = ensure_rule(value)
            if isinstance(key, str):
                names[key] = rule
            elif isinstance(key, type) and issubclass(key, nn.Module):
                types.append(((key,), rule))
            elif isinstance(key, tuple) and all(isinstance(k, type) for k in key):
                types.append((key, rule))
            else:
                raise InputError(
                    f"composite keys must be module names (str) or nn.Module types, got "
                    f"{key!r}"
                )
        return replace(self, name=f"{self.name}+user", type_map=(*types, *self.type_map),
                       name_map=names)


def _base(conv: Rule, eps: float) -> TypeMap:
    return ((CONV, conv), (LINEAR, Epsilon(eps)), (BATCHNORM, Epsilon(eps)))


PRESETS: dict[str, Callable[[float], Composite]] = {
    "epsilon_plus_flat": lambda e: Composite("epsilon_plus_flat", _base(ZPlus(), e), Flat()),
    "epsilon_plus": lambda e: Composite("epsilon_plus", _base(ZPlus(), e)),
    "epsilon_gamma_box": lambda e: Composite("epsilon_gamma_box", _base(Gamma(0.25), e),
                                             ZBox(), first_types=CONV),
    "epsilon_alpha2_beta1_flat": lambda e: Composite(
        "epsilon_alpha2_beta1_flat", _base(AlphaBeta(2.0, 1.0), e), Flat()),
    "epsilon_alpha2_beta1": lambda e: Composite("epsilon_alpha2_beta1",
                                                _base(AlphaBeta(2.0, 1.0), e)),
    "epsilon": lambda e: Composite("epsilon", _base(Epsilon(e), e), activations="gradient",
                                   sum_epsilon=e),
}
DEFAULT = "epsilon_plus_flat"


def names() -> list[str]:
    return list(PRESETS)


def get(spec: str | Composite | Mapping[Any, Rule | str] | None = None,
        epsilon: float = 1e-6) -> Composite:
    """A preset by name, a :class:`Composite`, or a user map on top of the default."""
    if spec is None:
        spec = DEFAULT
    if isinstance(spec, Composite):
        return spec
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise InputError(f"unknown composite {spec!r}; available: {', '.join(PRESETS)}, "
                             f"or a dict {{module type or name: rule}}")
        return PRESETS[spec](epsilon)
    if isinstance(spec, Mapping):
        return PRESETS[DEFAULT](epsilon).with_map(spec)
    raise InputError(f"composite must be a preset name, a Composite or a dict, got {spec!r}")
