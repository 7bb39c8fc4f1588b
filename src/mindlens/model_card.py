"""Load a :class:`~mindlens.model.Classifier` from a JSON model card.

A card describes the model and its input, with paths relative to the card::

    {"factory": "mynet:build", "weights": "w.safetensors",
     "input_size": [H, W], "channels": 3, "mean": [...], "std": [...],
     "labels": "labels.txt" | ["cat", ...], "logit_offset": 0,
     "output": "softmax" | "sigmoid" | "single_logit", "resize": "stretch" | "crop" | "pad"}

``"output"`` says what the logits mean (default ``"softmax"``; ``"sigmoid"`` for a
multi-label model, ``"single_logit"`` for a ``[B, 1]`` detector); see
:data:`mindlens.model.OUTPUTS`. ``"resize"`` says how an image of another aspect ratio
reaches the input size (default ``"stretch"``).

``"torchscript": "m.pt"`` replaces factory + weights; so does ``"onnx": "m.onnx"`` (run
through onnxruntime as a black box; ``"outputs": "probs"`` if the graph ends in a softmax).

Safety rules, each refused with one line that names the field and the fix:

- every field is type-checked (:func:`check_card`); other keys are kept as metadata;
- ``logit_offset`` is >= 0 and leaves at least two classes;
- data paths (weights, labels, ONNX, TorchScript) stay inside the card's folder unless the
  card says ``"allow_outside": true`` or the caller trusts it (``trust=True``, the CLI's
  ``--trust-card``): a card that looks like data must not read any file on the machine;
- a factory module found in the card's folder is imported under a name unique to that
  folder, so two cards with a ``mynet.py`` each never share code through Python's module
  cache; a factory that fails to import, raises or calls ``sys.exit`` is reported in one
  line with its own message;
- weights load with ``weights_only=True`` (a pickle that needs more than tensors is
  refused, because unpickling can run arbitrary code) and must be finite.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pickle
import sys
import types
from numbers import Real
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import InputError, ModelError
from .model import OUTPUTS, Classifier

REQUIRED = ("input_size",)
#: the card fields that name files, which must stay inside the card's folder
DATA_PATHS = ("weights", "labels", "onnx", "torchscript")
#: set by the CLI's ``--trust-card``: data paths may leave the card's folder
TRUST_CARDS = False


def trust_cards(trust: bool = True) -> None:
    """Let every card loaded from now on name files outside its folder (``--trust-card``)."""
    global TRUST_CARDS
    TRUST_CARDS = bool(trust)


def load_model(card: str | Path | dict[str, Any], root: str | Path | None = None,
               trust: bool | None = None) -> Classifier:
    """Build the classifier a model card describes (a path to a JSON file, or a dict).

    ``trust``: allow data paths outside the card's folder (default: :data:`TRUST_CARDS`,
    off unless the CLI got ``--trust-card``; a card may also say ``"allow_outside": true``).
    """
    if isinstance(card, (str, Path)):
        path = Path(card)
        if not path.exists():
            raise InputError(f"model card not found: {path}")
        if path.is_dir():
            raise InputError(f"model card {path} is a folder; give the card's JSON file")
        try:
            data = json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(f"model card {path} is not valid JSON: {err}") from None
        root = path.parent if root is None else Path(root)
        name = str(data.get("name", path.stem)) if isinstance(data, dict) else path.stem
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    else:
        data = card
        root = Path(root or ".")
        name = str(data.get("name", "model")) if isinstance(data, dict) else "model"
        digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()
                                ).hexdigest()
    if not isinstance(data, dict):
        raise InputError(f"a model card must be a JSON object {{...}}, got a "
                         f"{type(data).__name__}")
    data = dict(data)
    check_card(data)
    trusted = (TRUST_CARDS if trust is None else trust) or data.get("allow_outside", False)
    if not trusted:
        for key in DATA_PATHS:
            if isinstance(data.get(key), str):
                _inside(root, key, data[key])
    module = _build_module(data, root)
    check_finite_weights(module, data.get("weights") or data.get("torchscript") or "model")
    channels = data.get("channels", 3)
    return Classifier(
        module,
        input_size=tuple(data["input_size"]),
        channels=channels,
        mean=_per_channel(data.get("mean", 0.0)),
        std=_per_channel(data.get("std", 1.0)),
        labels=_labels(data.get("labels"), root),
        logit_offset=data.get("logit_offset", 0),
        name=name,
        output=_output(data.get("output", "softmax")),
        card_sha256=digest,
        resize=str(data.get("resize", "stretch")),
    )


# -- the schema ----------------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def _bad(key: str, want: str, value: Any) -> InputError:
    shown = json.dumps(value) if isinstance(value, (str, int, float, list, dict, bool,
                                                    type(None))) else repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return InputError(f"model card: {key!r} must be {want}, got {shown}")


def check_card(data: dict[str, Any]) -> None:
    """Type-check every known field of a card; raise :class:`InputError` (one line)."""
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise InputError(f"model card lacks {', '.join(missing)}")
    size = data["input_size"]
    if not (isinstance(size, list) and len(size) in (2, 3) and all(_is_int(s) and s > 0
                                                                    for s in size)):
        raise _bad("input_size", "[H, W] or [D, H, W] of positive integers", size)
    channels = data.get("channels", 3)
    if not (_is_int(channels) and channels > 0):
        raise _bad("channels", "a positive integer", channels)
    for key, positive in (("mean", False), ("std", True)):
        if key not in data:
            continue
        v = data[key]
        values = v if isinstance(v, list) else [v]
        if not values or not all(_is_num(x) and x == x and abs(x) != float("inf")
                                 for x in values):
            raise _bad(key, "a number or a list of numbers (one per channel)", v)
        if len(values) not in (1, channels):
            raise _bad(key, f"1 or {channels} values (the card's channels)", v)
        if positive and any(x <= 0 for x in values):
            raise _bad(key, "positive", v)
    offset = data.get("logit_offset", 0)
    if not (_is_int(offset) and offset >= 0):
        raise _bad("logit_offset", "an integer >= 0 (leading logits to drop)", offset)
    for key in ("name", "factory", "outputs", *DATA_PATHS):
        if key in data and key != "labels" and not (isinstance(data[key], str) and data[key]):
            raise _bad(key, "a non-empty string" + (" (a path relative to the card)"
                                                    if key in DATA_PATHS else ""), data[key])
    labels = data.get("labels")
    if labels is not None and not (
            (isinstance(labels, str) and labels)
            or (isinstance(labels, list) and all(isinstance(x, (str, int)) for x in labels))):
        raise _bad("labels", "a file name or a list of names", labels)
    if isinstance(labels, list) and len(labels) < 2:
        raise _bad("labels", "at least two class names", labels)
    if "outputs" in data and data["outputs"] not in ("logits", "probs"):
        raise _bad("outputs", '"logits" or "probs"', data["outputs"])
    if not isinstance(data.get("factory_kwargs", {}), dict):
        raise _bad("factory_kwargs", "an object of keyword arguments", data["factory_kwargs"])
    if not isinstance(data.get("allow_outside", False), bool):
        raise _bad("allow_outside", "true or false", data["allow_outside"])


def _per_channel(v: Any) -> list[float]:
    return [float(x) for x in (v if isinstance(v, list) else [v])]


def _inside(root: Path, key: str, value: str) -> Path:
    """``root / value``, refused if it leaves the card's folder."""
    base = root.resolve()
    target = (base / value).resolve()
    if not target.is_relative_to(base):
        raise InputError(
            f"model card: {key} {value!r} is outside the card's folder {base}; a card may "
            f"only read files next to it. If you trust this card, add \"allow_outside\": "
            f"true to it or pass --trust-card (trust=True in load_model)")
    return target


def check_finite_weights(module: nn.Module, source: str) -> None:
    """Refuse a model whose parameters or floating buffers hold NaN or infinity."""
    for kind, items in (("weight", module.named_parameters()),
                        ("buffer", module.named_buffers())):
        for name, t in items:
            if t.is_floating_point() and not torch.isfinite(t).all():
                bad = int((~torch.isfinite(t)).sum())
                raise ModelError(
                    f"{kind} {name!r} of {source} holds {bad} NaN or infinite value(s); the "
                    f"model's outputs would be meaningless. Fix or re-export the weights")


# -- building the module -------------------------------------------------------------------
def _build_module(data: dict[str, Any], root: Path) -> nn.Module:
    if "onnx" in data:
        from .blackbox import OnnxModel

        shape = (data.get("channels", 3), *data["input_size"])
        return OnnxModel(root / data["onnx"], outputs=data.get("outputs", "logits"),
                         input_shape=shape)
    if "torchscript" in data:
        path = root / data["torchscript"]
        if not path.is_file():
            raise InputError(f"TorchScript file not found: {path}")
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as err:
            raise ModelError(f"cannot load TorchScript model {path}: "
                             f"{_one_line(err)}") from None
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
        except (RuntimeError, TypeError, ValueError) as err:
            first = str(err).splitlines()[0:3]
            raise ModelError(
                f"the weights in {data['weights']} do not fit the model built by "
                f"{data['factory']}: {' '.join(first)}"
            ) from None
    return module.eval()


def _one_line(err: BaseException) -> str:
    """``Type: message`` on one line (a factory's own words, newlines folded)."""
    text = " ".join(str(err).split())
    if isinstance(err, SystemExit):
        return f"SystemExit({err.code!r})"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def card_package(root: Path) -> str:
    """The unique package under which the factory modules of the card folder ``root``
    are imported (``mindlens_card_<hash of the folder>``), created on first use."""
    folder = str(root.resolve())
    name = "mindlens_card_" + hashlib.sha1(folder.encode("utf-8", "surrogateescape")
                                           ).hexdigest()[:16]
    if name not in sys.modules:
        pkg = types.ModuleType(name, f"factory modules of the model cards in {folder}")
        pkg.__path__ = [folder]
        sys.modules[name] = pkg
    return name


def _import_factory_module(mod_name: str, root: Path) -> types.ModuleType:
    """The factory's module: from the card's folder under :func:`card_package` when the
    file is there, else from the Python path (an installed package)."""
    first = mod_name.split(".")[0]
    local = (root / f"{first}.py").is_file() or (root / first / "__init__.py").is_file()
    full = f"{card_package(root)}.{mod_name}" if local else mod_name
    folder = str(root.resolve())
    sys.path.insert(0, folder)  # the factory may import its sibling files
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as err:
        if local and err.name not in (full, mod_name):
            raise ModelError(f"the factory module {mod_name!r} failed to import: "
                             f"{_one_line(err)}") from None
        raise ModelError(
            f"cannot import {mod_name!r} for the factory (looked in {root} and on the Python "
            f"path): {err}"
        ) from None
    except (Exception, SystemExit) as err:  # the module's own code failed: say how
        sys.modules.pop(full, None)
        raise ModelError(f"the factory module {mod_name!r} failed to import: "
                         f"{_one_line(err)}") from None
    finally:
        sys.path.remove(folder)


def _call_factory(spec: str, root: Path, kwargs: dict[str, Any]) -> nn.Module:
    mod_name, _, fn_name = spec.partition(":")
    if not mod_name or not fn_name:
        raise InputError(f'factory must look like "package.module:function", got {spec!r}')
    module = _import_factory_module(mod_name, root)
    fn = getattr(module, fn_name, None)
    if fn is None:
        raise ModelError(f"module {mod_name!r} has no {fn_name!r}")
    if not callable(fn):
        raise ModelError(f"factory {spec} is a {type(fn).__name__}, not a function")
    try:
        model = fn(**kwargs)
    except (Exception, SystemExit) as err:
        raise ModelError(f"the factory {spec} failed: {_one_line(err)}") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch pickle (tensors only, never code)."""
    if not path.exists():
        raise InputError(f"weights file not found: {path}")
    if path.is_dir():
        raise InputError(f"weights {path} is a folder, not a file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own SafetensorError
            raise ModelError(f"cannot read safetensors file {path}: {_one_line(err)}"
                             ) from None
    with path.open("rb") as fh:
        head = fh.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # zip or pickle
        raise ModelError(f"cannot read weights file {path}: it is neither safetensors nor "
                         f"a torch.save file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ModelError(
            f"refused to load {path}: it is a pickle that needs more than tensors "
            f"(weights_only=True failed: {str(err).splitlines()[0]}). Unpickling can run "
            f"arbitrary code, so mindlens does not. Save a plain state dict "
            f"(torch.save(model.state_dict(), path)) or convert to .safetensors."
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        raise ModelError(f"cannot read weights file {path}: {_one_line(err)}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ModelError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def _output(value: Any) -> str:
    if not isinstance(value, str) or value not in OUTPUTS:
        raise InputError(f"the model card's \"output\" must be one of "
                         f"{', '.join(map(repr, OUTPUTS))}, got {value!r}")
    return str(value)


def _labels(value: Any, root: Path) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, list):
        return [str(v) for v in value]
    path = root / str(value)
    if not path.is_file():
        raise InputError(f"labels file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"labels file {path} is not UTF-8 text (one class name a line)"
                         ) from None
    return [line.strip() for line in text.splitlines() if line.strip()]
