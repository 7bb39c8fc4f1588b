"""Content fingerprints for a run's manifest: a model (its weights and card), an input (its
bytes), a parameter value (a file it names is hashed too).

All hashes are SHA-256, hex. They identify content, not names: a copied file keeps its
hash, a retrained model with the same file name gets a new one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..blackbox import BlackBox
from ..model import Classifier
from ..patching import model_lock

CHUNK = 1 << 20


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu()
    if t.is_quantized:
        t = t.dequantize()
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()  # any dtype


def weights_hash(module: torch.nn.Module) -> str:
    """SHA-256 over the state dict: every entry's name, dtype, shape and bytes, in order."""
    h = hashlib.sha256()
    with model_lock(module):  # never hash another thread's patched state
        for name, t in module.state_dict().items():
            if not isinstance(t, torch.Tensor):
                continue
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(_tensor_bytes(t))
    return h.hexdigest()


def model_fingerprint(clf: Classifier) -> dict[str, Any]:
    """The weights hash and every field of the card that changes what the model computes.
    A black box has no weights to hash: an ONNX model is known by its file's hash, any
    other callable only by its name (``"source"``)."""
    source: Any = None
    if isinstance(clf.module, BlackBox):
        path = getattr(clf.module, "path", None)
        source = ({"onnx_sha256": file_hash(path)} if path is not None and Path(path).is_file()
                  else {"callable": clf.module.extra_repr()})
    return {
        "source": source,
        "name": clf.name,
        "class": f"{type(clf.module).__module__}.{type(clf.module).__qualname__}",
        "weights_sha256": weights_hash(clf.module),
        "input_size": list(clf.input_size), "channels": clf.channels,
        "mean": [float(v) for v in clf.mean], "std": [float(v) for v in clf.std],
        "labels": list(clf.labels) if clf.labels is not None else None,
        "logit_offset": clf.logit_offset, "black_box": clf.black_box,
    }


def input_hash(item: Any) -> str:
    """SHA-256 of one input: a file's bytes, or an array's dtype, shape and values (PIL
    images by mode, size and pixels); ``"none"`` for ``None`` (e.g. no mask)."""
    if item is None:
        return "none"
    if isinstance(item, (str, Path)):
        return file_hash(item)
    h = hashlib.sha256()
    if isinstance(item, torch.Tensor):
        h.update(f"tensor|{item.dtype}|{tuple(item.shape)}|".encode())
        h.update(_tensor_bytes(item))
    elif isinstance(item, np.ndarray):
        a = np.ascontiguousarray(item)
        h.update(f"array|{a.dtype}|{a.shape}|".encode())
        h.update(a.tobytes())
    elif hasattr(item, "tobytes") and hasattr(item, "mode") and hasattr(item, "size"):
        h.update(f"pil|{item.mode}|{item.size}|".encode())
        h.update(item.tobytes())
    else:
        h.update(repr(item).encode())
    return h.hexdigest()


def describe(value: Any) -> Any:
    """A JSON-safe picture of a parameter value: numbers, strings, lists and dicts as they
    are; a string naming an existing file also carries the file's hash (a MACE unit, a
    mask); anything else by its ``repr``."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (str, Path)):
        p = Path(value)
        try:
            if p.is_file():
                return {"path": str(value), "sha256": file_hash(p)}
        except OSError:
            pass
        return str(value)
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return {"array_sha256": input_hash(value)}
    return repr(value)
