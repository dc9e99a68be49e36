"""Backbones and embedding heads; importing this package registers every architecture."""

from . import mobilenet, resnet, swin, vit  # noqa: F401  (registers architectures)
from .base import ReIDModel

__all__ = ["ReIDModel"]
