"""Gemma 1, the decoder of PaliGemma 1: two norms per block (`input_layernorm` before attention,
`post_attention_layernorm` before the MLP, despite its name), attention scaled by head_dim**-0.5, no soft-caps and
no sliding window (every layer sees the whole sequence). PaliGemma 1 uses multi-query attention (one kv head),
which the shared grouped-query attention covers as K = 1. Everything else is the shared skeleton in gemma.py.
"""

from __future__ import annotations

from torch import nn

from .config import TextConfig
from .gemma import MLP, Attention, GemmaDecoder, RMSNorm


class Gemma1Block(nn.Module):
    def __init__(self, cfg: TextConfig, layer: int):
        super().__init__()
        self.self_attn = Attention(cfg, layer, scale=cfg.head_dim ** -0.5, softcap=None)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)  # the pre-MLP norm

    def forward(self, x, cos, sin, cache, start, mask, last_only=False):
        attended = self.self_attn(self.input_layernorm(x), cos, sin, cache, start, mask, last_only)
        x = x[:, -attended.shape[1]:] + attended  # the last row alone if last_only
        return x + self.mlp(self.post_attention_layernorm(x))


class Gemma1Decoder(GemmaDecoder):
    layer_class = Gemma1Block
