"""int8 TFLite through Google's maintained converter (``litert-torch``, PT2E quantization: per-channel
symmetric int8 weights, int8 activations calibrated on training images), run by the ``ai-edge-litert``
interpreter. Optional: ``pip install 'slimzip[tflite]'`` (it keeps the CPU torch build)."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import SlimzipError

NEEDS = "int8 TFLite export needs litert-torch: pip install 'slimzip[tflite]'"


def to_tflite_int8(model: nn.Module, calibration: np.ndarray) -> bytes:
    """``model`` (batch 1) as an int8 .tflite flatbuffer, calibrated one image at a time on ``calibration``."""
    try:
        import litert_torch  # noqa: F401 (here only to say what is missing; _convert uses it)
    except ImportError:
        raise SlimzipError(NEEDS) from None
    try:
        with _silenced():
            return _convert(model.eval(), calibration)
    except Exception as e:  # the exporter and converter fail in many ways on what they do not support
        raise SlimzipError(f"the TFLite converter failed ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None


def _convert(model: nn.Module, calibration: np.ndarray) -> bytes:
    """litert-torch's PT2E recipe: export, insert observers, calibrate, quantize, convert."""
    import litert_torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    args = (torch.from_numpy(calibration[:1]).float(),)
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
    prepared = quantize_pt2e.prepare_pt2e(torch.export.export(model, args).module(), quantizer)
    with torch.no_grad():
        for i in range(len(calibration)):
            prepared(torch.from_numpy(calibration[i:i + 1]).float())
    quantized = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    edge = litert_torch.convert(quantized, args, quant_config=QuantConfig(pt2e_quantizer=quantizer))
    with tempfile.TemporaryDirectory(prefix="slimzip-tflite-") as tmp:
        path = Path(tmp) / "model.tflite"
        edge.export(str(path))
        return path.read_bytes()


@contextlib.contextmanager
def _silenced():
    """The converter's progress lines (printed by Python and C++ alike) kept off slimzip's stdout / stderr."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def run_tflite(blob: bytes, images: np.ndarray) -> tuple[np.ndarray, float]:
    """The interpreter's logits on ``images`` (one at a time) and its seconds per image."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise SlimzipError(NEEDS) from None
    interpreter = Interpreter(model_content=blob)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    logits, t0 = [], time.perf_counter()
    for i in range(len(images)):
        interpreter.set_tensor(inp["index"], _quantize(images[i:i + 1], inp))
        interpreter.invoke()
        logits.append(_dequantize(interpreter.get_tensor(out["index"]), out))
    return np.concatenate(logits), (time.perf_counter() - t0) / max(1, len(images))


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """A float input as the tensor's type (int8 inputs: x / scale + zero point, rounded and clipped)."""
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.floating):
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.rint(x / scale + zero), info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if np.issubdtype(detail["dtype"], np.floating):
        return y.astype(np.float32).copy()
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
