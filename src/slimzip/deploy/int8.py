"""int8 ONNX through onnxruntime's own static quantization: per-channel int8 weights, int8 activations
calibrated (min/max) on training images, QDQ format (onnxruntime fuses it into integer kernels)."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path

import numpy as np

from ..errors import SlimzipError


AGREEMENT_FLOOR = 0.99  # int8 top-1 agreement with fp32 on the calibration images below which the ends stay float
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")


def quantize_int8(onnx_bytes: bytes, calibration: np.ndarray) -> tuple[bytes, list[str]]:
    """The fp32 graph ``onnx_bytes`` (input 'input') with int8 weights and activations, calibrated on
    ``calibration`` (N, ...) float32 images, and the weighted nodes kept in float. Every weighted node is
    quantized unless that leaves the int8 graph agreeing with the fp32 one on fewer than
    ``AGREEMENT_FLOOR`` of the calibration images' top-1 classes; then the first and the last weighted
    nodes (the input's few channels, the logits: where int8's grid costs most) stay float, if that
    agrees more."""
    prepared = _prepared(onnx_bytes)
    whole = _quantize(prepared, calibration, [])
    reference = _top1(onnx_bytes, calibration)
    agreement = float((_top1(whole, calibration) == reference).mean())
    if agreement < AGREEMENT_FLOOR and (ends := _weighted_ends(prepared)):
        kept = _quantize(prepared, calibration, ends)
        if float((_top1(kept, calibration) == reference).mean()) > agreement:
            return kept, ends
    return whole, []


def _prepared(onnx_bytes: bytes) -> bytes:
    """onnxruntime's own pre-processing (shape inference, graph optimisation), which its quantizer asks for."""
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise SlimzipError("int8 export needs onnxruntime: pip install 'slimzip[onnx]'") from None

    with tempfile.TemporaryDirectory(prefix="slimzip-int8-") as tmp, _quiet():
        raw, src = Path(tmp) / "raw.onnx", Path(tmp) / "fp32.onnx"
        raw.write_bytes(onnx_bytes)
        try:
            quant_pre_process(str(raw), str(src), skip_symbolic_shape=True)
        except Exception as e:
            raise _refused(e) from None
        return src.read_bytes()


def _refused(e: Exception) -> SlimzipError:
    return SlimzipError(f"onnxruntime could not quantize the graph ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:160] if str(e) else ''})")


def _quantize(prepared: bytes, calibration: np.ndarray, exclude: list[str]) -> bytes:
    """The pre-processed graph with int8 weights and activations but for the ``exclude`` nodes."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)  # present: _prepared asked first

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": calibration[i:i + 32].astype(np.float32)}
                                 for i in range(0, len(calibration), 32)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="slimzip-int8-") as tmp, _quiet():
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(prepared)
        try:
            quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude,
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        except Exception as e:
            raise _refused(e) from None
        return dst.read_bytes()


def _weighted_ends(onnx_bytes: bytes) -> list[str]:
    """The names of the first and the last weighted node in graph order (none: fewer than two)."""
    import onnx

    nodes = [n.name for n in onnx.load_from_string(onnx_bytes).graph.node if n.op_type in WEIGHTED_OPS]
    return [nodes[0], nodes[-1]] if len(nodes) >= 2 else []


def _top1(onnx_bytes: bytes, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = 1, 3
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input": images[i:i + 64].astype(np.float32)})[0].argmax(1)
                           for i in range(0, len(images), 64)])


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
