"""The model zoo. Importing this package registers every family."""

from . import densenet, dropnet, lenet, resnet, vgg  # noqa: F401 - registration side effects
from .registry import MODELS, ModelEntry, create_model, get_model_entry, init_bn_scales_, register_model

__all__ = ["MODELS", "ModelEntry", "create_model", "get_model_entry", "init_bn_scales_", "register_model"]
