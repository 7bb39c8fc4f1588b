"""Evaluation metrics for relevance maps: pure functions over batch-first tensors.

Localisation (``maps`` ``[N, H, W]``, ``masks`` bool ``[N, H, W]`` -> ``[N]``):
:func:`pointing_game`, :func:`energy_pointing_game`, :func:`relevance_mass_accuracy`,
:func:`relevance_rank_accuracy`, :func:`iou`; their chance levels :func:`pointing_chance`,
:func:`centre_hit`, :func:`mask_share`. Concentration: :func:`sparseness`,
:func:`complexity`. Faithfulness: :func:`deletion_auc`, :func:`insertion_auc`, against
:func:`random_order_aucs`.
Robustness: :func:`max_sensitivity`, :func:`avg_sensitivity`. Sanity check:
:func:`cascading_randomization` (the model side), :func:`input_dependence` (the data
side). Class discrimination: :func:`class_similarity`, :func:`object_share`,
:func:`relevance_contrast`. Cost: :func:`native_resolution`,
:func:`cost_per_image`, :func:`model_access`.
"""

from .complexity import complexity, sparseness
from .cost import ACCESS_LEVELS, cost_per_image, model_access, native_resolution
from .discrimination import class_similarity, object_share, relevance_contrast
from .explainers import ExplainFn, method_explainer
from .faithfulness import deletion, deletion_auc, insertion, insertion_auc, random_order_aucs
from .input_dependence import identical_maps, input_dependence
from .localization import (
    centre_hit,
    default_tolerance,
    energy_pointing_game,
    iou,
    mask_share,
    pointing_chance,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)
from .randomization import cascading_randomization
from .robustness import avg_sensitivity, max_sensitivity, sensitivity
from .similarity import cosine, spearman, ssim

__all__ = [
    "ACCESS_LEVELS", "ExplainFn", "avg_sensitivity", "cascading_randomization",
    "centre_hit", "class_similarity", "complexity", "cosine", "cost_per_image",
    "default_tolerance", "deletion", "deletion_auc", "energy_pointing_game",
    "identical_maps", "input_dependence", "insertion", "insertion_auc", "iou",
    "mask_share", "max_sensitivity", "method_explainer", "model_access",
    "native_resolution", "object_share", "pointing_chance", "pointing_game",
    "random_order_aucs", "relevance_contrast", "relevance_mass_accuracy",
    "relevance_rank_accuracy", "sensitivity", "sparseness", "spearman", "ssim",
]
