"""Image decoding, transforms, streamed extraction, and dataset readers (``datasets``, ``video``)."""

from .extract import ExtractResult, SkippedInput, extract_features
from .images import ImageInputError, expand_images, list_images, load_image

__all__ = ["ExtractResult", "ImageInputError", "SkippedInput", "expand_images", "extract_features", "list_images", "load_image"]
