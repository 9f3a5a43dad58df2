"""slimzip: find the smallest CNN that still meets an accuracy target, and ship it as a compressed file."""

__version__ = "0.1.0"
