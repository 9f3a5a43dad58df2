"""ONNX export of a model (narrowed widths, decoded weights), checked against PyTorch with onnxruntime.

ONNX has no format for k-means codebooks or sparse index streams, so the exported graph holds every
tensor as dense fp32: pruned weights are zeros and shared weights are their centroids' values. The
`.slz` file stays the small artifact; the ONNX file is the one a runtime can execute.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import warnings

import numpy as np
import torch
from torch import nn

from ..errors import SlimzipError

OPSET = 17


@dataclasses.dataclass(frozen=True)
class OnnxCheck:
    """How far onnxruntime's outputs are from PyTorch's on the same inputs."""

    images: int
    max_abs_diff: float
    max_rel_diff: float  # max |diff| / max(1, max |PyTorch output|)
    same_argmax: float  # fraction of inputs whose predicted class agrees


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SlimzipError(f"ONNX export needs the '{module}' package: pip install 'slimzip[onnx]'") from None


def to_onnx(model: nn.Module, input_shape: tuple[int, ...], opset: int = OPSET) -> bytes:
    """The model as an ONNX graph with a dynamic batch axis (input 'input', output 'logits')."""
    _require("onnx")
    model = model.eval().cpu()
    buffer = io.BytesIO()
    example = torch.zeros(2, *input_shape)
    try:  # the TorchScript exporter: it needs no extra package, and the torch pin (2.13) keeps it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=opset, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    except Exception as e:  # an exporter failure names the op it could not convert
        raise SlimzipError(f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    return buffer.getvalue()


@torch.no_grad()
def check_onnx(model: nn.Module, onnx_bytes: bytes, inputs: torch.Tensor) -> OnnxCheck:
    """Run the ONNX graph with onnxruntime and compare it with the PyTorch model on ``inputs``."""
    ort = _require("onnxruntime")
    try:  # a graph onnxruntime refuses is the model's problem to report, not a crash
        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        got = session.run(None, {"input": inputs.cpu().numpy().astype(np.float32)})[0]
    except Exception as e:
        raise SlimzipError(f"onnxruntime cannot run the exported graph ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    want = model.eval().cpu()(inputs.cpu()).numpy()
    diff = float(np.abs(got - want).max())
    return OnnxCheck(images=len(inputs), max_abs_diff=diff, max_rel_diff=diff / max(1.0, float(np.abs(want).max())),
                     same_argmax=float((got.argmax(1) == want.argmax(1)).mean()))
