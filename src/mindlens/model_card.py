"""Load a :class:`~mindlens.model.Classifier` from a JSON model card.

A card describes the model and its input, with paths relative to the card::

    {"factory": "mynet:build", "weights": "w.safetensors",
     "input_size": [H, W], "channels": 3, "mean": [...], "std": [...],
     "labels": "labels.txt" | ["cat", ...], "logit_offset": 0,
     "resize": "stretch" | "crop" | "pad"}

``"torchscript": "m.pt"`` replaces factory + weights; so does ``"onnx": "m.onnx"`` (run
through onnxruntime as a black box; ``"outputs": "probs"`` if the graph ends in a softmax).
The card's folder is importable while the factory is imported. Weights load with
``weights_only=True``: a pickle that needs more than tensors is refused, because
unpickling can run arbitrary code.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pickle
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import InputError, ModelError
from .model import Classifier

REQUIRED = ("input_size",)


def load_model(card: str | Path | dict[str, Any], root: str | Path | None = None) -> Classifier:
    """Build the classifier a model card describes (a path to a JSON file, or a dict)."""
    if isinstance(card, (str, Path)):
        path = Path(card)
        if not path.exists():
            raise InputError(f"model card not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"model card {path} is not valid JSON: {err}") from None
        root = path.parent if root is None else Path(root)
        name = data.get("name", path.stem)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    else:
        data = dict(card)
        root = Path(root or ".")
        name = data.get("name", "model")
        digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()
                                ).hexdigest()
    if not isinstance(data, dict):
        raise InputError("a model card must be a JSON object")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise InputError(f"model card lacks {', '.join(missing)}")
    module = _build_module(data, root)
    channels = int(data.get("channels", 3))
    return Classifier(
        module,
        input_size=tuple(data["input_size"]),
        channels=channels,
        mean=data.get("mean", [0.0] * channels),
        std=data.get("std", [1.0] * channels),
        labels=_labels(data.get("labels"), root),
        logit_offset=int(data.get("logit_offset", 0)),
        name=name,
        card_sha256=digest,
        resize=str(data.get("resize", "stretch")),
    )


def _build_module(data: dict[str, Any], root: Path) -> nn.Module:
    if "onnx" in data:
        from .blackbox import OnnxModel

        shape = (int(data.get("channels", 3)), *map(int, data["input_size"]))
        return OnnxModel(root / data["onnx"], outputs=data.get("outputs", "logits"),
                         input_shape=shape)
    if "torchscript" in data:
        path = root / data["torchscript"]
        if not path.exists():
            raise InputError(f"TorchScript file not found: {path}")
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as err:
            raise ModelError(f"cannot load TorchScript model {path}: {err}") from None
        return module.eval()
    if "factory" not in data:
        raise InputError(
            'a model card needs "factory" ("package.module:function") and "weights", '
            '"torchscript" or "onnx"'
        )
    module = _call_factory(data["factory"], root, data.get("factory_kwargs", {}))
    if "weights" in data:
        state = load_weights(root / data["weights"])
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as err:
            first = str(err).splitlines()[0:3]
            raise ModelError(
                f"the weights in {data['weights']} do not fit the model built by "
                f"{data['factory']}: {' '.join(first)}"
            ) from None
    return module.eval()


def _call_factory(spec: str, root: Path, kwargs: dict[str, Any]) -> nn.Module:
    mod_name, _, fn_name = spec.partition(":")
    if not mod_name or not fn_name:
        raise InputError(f'factory must look like "package.module:function", got {spec!r}')
    sys.path.insert(0, str(root.resolve()))
    try:
        module = importlib.import_module(mod_name)
    except ImportError as err:
        raise ModelError(
            f"cannot import {mod_name!r} for the factory (looked in {root} and on the Python "
            f"path): {err}"
        ) from None
    finally:
        sys.path.remove(str(root.resolve()))
    fn = getattr(module, fn_name, None)
    if fn is None:
        raise ModelError(f"module {mod_name!r} has no {fn_name!r}")
    model = fn(**kwargs)
    if not isinstance(model, nn.Module):
        raise ModelError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch pickle (tensors only, never code)."""
    if not path.exists():
        raise InputError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own SafetensorError
            raise ModelError(f"cannot read safetensors file {path}: {err}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ModelError(
            f"refused to load {path}: it is a pickle that needs more than tensors "
            f"(weights_only=True failed: {str(err).splitlines()[0]}). Unpickling can run "
            f"arbitrary code, so mindlens does not. Save a plain state dict "
            f"(torch.save(model.state_dict(), path)) or convert to .safetensors."
        ) from None
    except (RuntimeError, EOFError) as err:
        raise ModelError(f"cannot read weights file {path}: {err}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{path} holds a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _labels(value: Any, root: Path) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, list):
        return [str(v) for v in value]
    path = root / str(value)
    if not path.exists():
        raise InputError(f"labels file not found: {path}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]
