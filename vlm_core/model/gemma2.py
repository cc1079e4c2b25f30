"""Gemma 2, the decoder of PaliGemma 2: four norms per block (pre and post around both attention and MLP),
attention scaled by query_pre_attn_scalar**-0.5 with a tanh soft-cap, a sliding window on even layers, and a
soft-capped final logit. Everything else is the shared skeleton in gemma.py.
"""

from __future__ import annotations

from torch import nn

from .config import TextConfig
from .gemma import MLP, Attention, GemmaDecoder, RMSNorm


class Gemma2Block(nn.Module):
    def __init__(self, cfg: TextConfig, layer: int):
        super().__init__()
        self.self_attn = Attention(cfg, layer, scale=cfg.query_pre_attn_scalar ** -0.5,
                                   softcap=cfg.attn_logit_softcapping)  # capped before the mask, as trained
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.pre_feedforward_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_feedforward_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, cache, start, mask, last_only=False):
        attended = self.self_attn(self.input_layernorm(x), cos, sin, cache, start, mask, last_only)
        x = x[:, -attended.shape[1]:] + self.post_attention_layernorm(attended)  # the last row alone if last_only
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class Gemma2Decoder(GemmaDecoder):
    layer_class = Gemma2Block

    def __init__(self, cfg: TextConfig):
        super().__init__(cfg)
        self.final_softcap = cfg.final_logit_softcapping

    def window(self, layer: int) -> int | None:
        return self.cfg.sliding_window if self.cfg.is_sliding(layer) else None
