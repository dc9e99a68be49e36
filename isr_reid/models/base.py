"""The uniform interface of every zoo model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..data.extract import extract_features
from ..weights import save_pretrained

if TYPE_CHECKING:
    import numpy as np

    from ..config import ModelConfig

__all__ = ["ReIDModel"]


class ReIDModel(nn.Module):
    """A backbone and an embedding head with one method set across the zoo.

    - ``forward_features(x)``: the backbone's output, a feature map (B, C, H, W) or tokens (B, L, C).
    - ``forward_head(features, normalize=True)``: the embedding (B, D); unit rows when ``normalize``.
    - ``forward(x)``: ``x`` is float (B, 3, H, W), already normalised with ``cfg.mean``/``cfg.std``;
      returns L2-normalised embeddings (B, D).
    - ``extract(images)``: any image input -> numpy float32 (N, D) unit rows.
    """

    cfg: ModelConfig

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    def extract(
        self,
        images: Any,
        *,
        batch_size: int = 64,
        flip: bool = False,
        progress: bool | None = None,
        num_workers: int | None = None,
        channel_order: str = "rgb",
    ) -> np.ndarray:
        """Embed images: numpy float32 (N, D), unit rows, in input order.

        ``images``: a path, a directory (its image files, sorted, recursively), a PIL image,
        a numpy HWC uint8 array (or NHWC batch), a torch uint8 CHW tensor (or BCHW batch), a torch
        float CHW tensor in [0, 1], or a list of any of these. ``channel_order="bgr"`` says that
        numpy/tensor inputs are BGR (OpenCV). ``flip`` averages each embedding with that of the
        mirrored image and re-normalises. Files and PIL images are turned upright by their EXIF
        orientation and 16-bit grey is scaled to 8 bits; a shape such as (3, H, 3) that reads as HWC
        and CHW is refused; a NaN/inf embedding raises. See :func:`isr_reid.data.extract_features`.
        """
        return extract_features(
            self,
            images,
            batch_size=batch_size,
            flip=flip,
            progress=progress,
            num_workers=num_workers,
            channel_order=channel_order,
        ).embeddings

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``model.safetensors``, ``config.json`` and a model card ``README.md`` to ``directory``."""
        return save_pretrained(self, directory)
