"""slimzip: find the smallest CNN that still meets an accuracy target, and ship it as a compressed file.

``slimzip.train``, ``slimzip.search``, ``slimzip.compress``, ``slimzip.load`` (see ``slimzip.core``) and
``slimzip.export`` (ONNX, int8 ONNX, C99; ``slimzip.api.deploying``) are
loaded on first use, so that importing a light module (the .slz reader) does not import the whole pipeline.
"""

__version__ = "0.1.0"
__all__ = ["Compressed", "compress", "export", "load", "search", "train", "__version__"]


def __getattr__(name: str):
    if name == "load":  # the reader alone: no training or search modules
        from .reader import load

        return load
    if name == "export":
        from .api.deploying import export

        return export
    if name in ("Compressed", "compress", "search", "train"):
        from . import core

        return getattr(core, name)
    raise AttributeError(f"module 'slimzip' has no attribute {name!r}")
