"""Models mindlens can only run, not open: any callable from a batch to class scores, and
ONNX files run through onnxruntime.

:class:`BlackBox` wraps such a callable as a ``torch.nn.Module`` so that it fits in a
:class:`~mindlens.model.Classifier`; the classifier then knows it is a black box, and
methods that need gradients, layers or hooks refuse it with a clear message. Perturbation
methods (occlusion, area occlusion) only need outputs and run on it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import InputError, ModelError

OUTPUTS = ("logits", "probs")


class BlackBox(nn.Module):
    """A callable ``batch -> [B, classes]`` as a module.

    - ``fn``: takes a model-space batch ``[B, C, *spatial]`` (a NumPy ``float32`` array if
      ``numpy=True``, else a tensor) and returns logits or probabilities, as an array or a
      tensor.
    - ``outputs``: ``"logits"`` or ``"probs"``. Probabilities are turned into
      log-probabilities, which are logits up to a constant: the softmax of the result is
      the given probabilities, so ``score="prob"`` watches exactly the model's output.

    No gradient ever flows through a black box: the input is detached before ``fn`` sees it.
    """

    def __init__(self, fn: Callable[[Any], Any], outputs: str = "logits",
                 numpy: bool = False) -> None:
        super().__init__()
        if not callable(fn):
            raise ModelError(f"a black-box model must be callable, got {type(fn).__name__}")
        if outputs not in OUTPUTS:
            raise InputError(f"outputs must be one of {', '.join(OUTPUTS)}, got {outputs!r}")
        self.fn = fn
        self.outputs = outputs
        self.numpy = numpy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp: Any = x.detach().cpu().numpy().astype(np.float32) if self.numpy else x.detach()
        out = self.fn(inp)
        if isinstance(out, (tuple, list)) and out and not np.isscalar(out[0]):
            out = out[0]
        out = torch.as_tensor(np.asarray(out) if not isinstance(out, torch.Tensor) else out)
        out = out.to(device=x.device, dtype=x.dtype)
        if self.outputs == "probs":
            out = out.clamp_min(torch.finfo(out.dtype).tiny).log()
        return out

    def extra_repr(self) -> str:
        return f"fn={getattr(self.fn, '__name__', type(self.fn).__name__)}, outputs={self.outputs}"


class OnnxModel(BlackBox):
    """An ONNX classifier run with onnxruntime on the CPU.

    The graph must take one input ``[B, C, *spatial]`` and give ``[B, classes]`` as its
    first output; anything else is refused when the file is loaded. A graph exported with
    a fixed batch size of 1 is run one image at a time.
    """

    def __init__(self, path: str | Path, outputs: str = "logits",
                 input_shape: Sequence[int] | None = None) -> None:
        path = Path(path)
        if not path.exists():
            raise InputError(f"ONNX file not found: {path}")
        try:
            import onnxruntime
        except ImportError:
            raise ModelError(
                "running ONNX models needs onnxruntime: pip install 'mindlens[onnx]'"
            ) from None
        try:
            session = onnxruntime.InferenceSession(str(path),
                                                   providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelError(f"cannot load ONNX model {path}: {err}") from None
        inputs, outs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) not in (4, 5):
            shapes = [i.shape for i in inputs]
            raise ModelError(
                f"{path.name} is not an image classifier mindlens can run: it takes "
                f"{len(inputs)} input(s) of shape {shapes}; expected one image batch "
                f"[B, C, H, W] (or [B, C, D, H, W] for volumes)"
            )
        if not outs or len(outs[0].shape) != 2:
            raise ModelError(
                f"{path.name} is not a classifier: its first output has shape "
                f"{outs[0].shape if outs else None}; mindlens explains models whose output "
                f"is class scores [B, classes]"
            )
        self.session = session
        self.input_name = inputs[0].name
        self.fixed_batch = inputs[0].shape[0] == 1
        self.path = path
        super().__init__(self._run, outputs=outputs, numpy=True)
        self.__name__ = path.name
        if input_shape is not None:
            self._check_runs(tuple(input_shape))

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.fixed_batch and batch.shape[0] != 1:
            return np.concatenate([self._run(batch[i : i + 1]) for i in range(len(batch))])
        return self.session.run(None, {self.input_name: batch})[0]

    def _check_runs(self, shape: tuple[int, ...]) -> None:
        try:
            out = self._run(np.zeros((1, *shape), dtype=np.float32))
        except Exception as err:  # onnxruntime's own errors
            raise ModelError(
                f"{self.path.name} does not run on an input of shape {[1, *shape]} (from the "
                f"model card): {str(err).splitlines()[0]}"
            ) from None
        if np.ndim(out) != 2 or np.shape(out)[0] != 1:
            raise ModelError(
                f"{self.path.name} is not a classifier: it returned shape {np.shape(out)} for "
                f"one image; mindlens explains models whose output is [B, classes]"
            )

    def extra_repr(self) -> str:
        return f"path={self.path.name}, outputs={self.outputs}"
