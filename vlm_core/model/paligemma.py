"""PaliGemma 1 and 2: SigLIP vision tower, linear projector, Gemma decoder (Gemma 1 or Gemma 2, by config).

Axes: B batch, T tokens, P image tokens (patches), D decoder width, E vision width, V vocabulary.

The image features replace the embeddings of the `image_token_index` placeholders as they are: no extra scaling
(the sqrt(D) scale applies to text embeddings only).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import PaliGemmaConfig
from .gemma import GemmaDecoder, KVCache
from .gemma1 import Gemma1Decoder
from .gemma2 import Gemma2Decoder
from .linear import Linear
from .siglip import SiglipVisionTower

DECODERS: dict[str, type[GemmaDecoder]] = {"gemma": Gemma1Decoder, "gemma2": Gemma2Decoder}


class PaliGemma(nn.Module):
    def __init__(self, cfg: PaliGemmaConfig):
        super().__init__()
        self.cfg = cfg
        self.vision = SiglipVisionTower(cfg.vision)
        self.projector = Linear(cfg.vision.hidden_size, cfg.text.hidden_size)
        if cfg.text.family not in DECODERS:
            raise ValueError(f"Unknown variant: {cfg.text.family}")
        self.text = DECODERS[cfg.text.family](cfg.text)

    @property
    def dtype(self) -> torch.dtype:
        return self.projector.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.projector.weight.device

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """float[B, 3, S, S] in [-1, 1] -> float[B, P, D], ready to stand in for the image tokens."""
        return self.projector(self.vision(pixels.to(device=self.device, dtype=self.dtype)))

    def new_cache(self, max_len: int, prefix_len: int, batch: int = 1) -> KVCache:
        return KVCache(self.cfg.text, max_len, prefix_len, batch, self.dtype, self.device)

    def forward(self, ids: torch.Tensor, start: int, cache: KVCache, image_features: torch.Tensor | None = None,
                all_logits: bool = False) -> torch.Tensor:
        """ids long[B, T] at cache positions start.. -> logits float[B, 1, V] (the last position) or float[B, T, V].

        `image_features` float[B, P, D] fills the placeholders in `ids`; pass it with the prefill only.
        """
        x = self.text.embed(ids)
        if image_features is not None:
            placeholders = ids == self.cfg.image_token_index
            n = int(placeholders.sum())
            if n != image_features.shape[0] * image_features.shape[1]:
                raise ValueError(f"{n} image placeholders for {image_features.shape[1]} image features per row")
            x = x.masked_scatter(placeholders.unsqueeze(-1), image_features.to(x.dtype))
        # Generation needs only the last position: the last layer and the 257k-entry head run for it alone.
        return self.text.logits(self.text(x, start, cache, last_only=not all_logits))
