"""Backbones and embedding heads; importing this package registers every architecture."""

from . import resnet  # noqa: F401  (registers architectures)
from .base import ReIDModel

__all__ = ["ReIDModel"]
