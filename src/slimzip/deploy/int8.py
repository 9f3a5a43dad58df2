"""int8 ONNX through onnxruntime's own static quantization: per-channel int8 weights, int8 activations
calibrated (min/max) on training images, QDQ format (onnxruntime fuses it into integer kernels)."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path

import numpy as np

from ..errors import SlimzipError


def quantize_int8(onnx_bytes: bytes, calibration: np.ndarray) -> bytes:
    """The fp32 graph ``onnx_bytes`` (input 'input') with int8 weights and activations, calibrated on
    ``calibration`` (N, ...) float32 images."""
    try:
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
    except ImportError:
        raise SlimzipError("int8 export needs onnxruntime: pip install 'slimzip[onnx]'") from None

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": calibration[i:i + 32].astype(np.float32)}
                                 for i in range(0, len(calibration), 32)])

        def get_next(self):
            return next(self.batches, None)

    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="slimzip-int8-") as tmp, _quiet():
        raw, src, dst = Path(tmp) / "raw.onnx", Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        raw.write_bytes(onnx_bytes)
        try:  # onnxruntime's own pre-processing (shape inference, graph optimisation) first, as it asks
            quant_pre_process(str(raw), str(src), skip_symbolic_shape=True)
            quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        except Exception as e:
            raise SlimzipError(f"onnxruntime could not quantize the graph ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
        return dst.read_bytes()


@contextlib.contextmanager
def _quiet():
    """onnxruntime's quantizer logs advice through the root logger: not for slimzip's users."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
