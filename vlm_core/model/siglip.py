"""SigLIP vision tower as PaliGemma uses it: every patch out, no CLS token, no pooling head.

Axes: B batch, P patches, D width, N heads, H head dim, C channels, S image side in pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .chunking import query_chunk
from .config import VisionConfig
from .linear import Linear


class SiglipEmbeddings(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        # A stride-p conv is the patchify + linear projection in one op.
        self.patch_embedding = nn.Conv2d(3, cfg.hidden_size, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.position_embedding = nn.Embedding(cfg.num_patches, cfg.hidden_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """float[B, C, S, S] -> float[B, P, D]"""
        x = self.patch_embedding(pixels.to(self.patch_embedding.weight.dtype))
        x = x.flatten(2).transpose(1, 2)  # [B, P, D], row-major patch order
        return x + self.position_embedding.weight


class SiglipAttention(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        d = cfg.hidden_size
        self.num_heads, self.head_dim = cfg.num_attention_heads, cfg.head_dim
        self.scale = cfg.head_dim ** -0.5
        self.q_proj, self.k_proj, self.v_proj = Linear(d, d), Linear(d, d), Linear(d, d)
        self.out_proj = Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, p, _ = x.shape
        q, k, v = (proj(x).view(b, p, self.num_heads, self.head_dim).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        # Written out rather than fused SDPA: in bf16 the fused kernels round differently from the reference's
        # matmul -> fp32 softmax -> matmul, and a different image feature can flip a greedy token. Rows are
        # independent (no mask), so chunking the queries is exact; chunking.py says why the chunks are small.
        k_t, rows = k.transpose(-1, -2), query_chunk(b * self.num_heads, p, x.device)
        out = torch.cat([
            torch.matmul(F.softmax(torch.matmul(q[:, :, i:i + rows], k_t) * self.scale, dim=-1,
                                   dtype=torch.float32).to(q.dtype), v)
            for i in range(0, p, rows)], dim=2)  # [B, N, P, H]
        return self.out_proj(out.transpose(1, 2).reshape(b, p, -1))


class SiglipMLP(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.fc1 = Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SiglipEncoderLayer(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = SiglipAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = SiglipMLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class SiglipVisionTower(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.embeddings = SiglipEmbeddings(cfg)
        self.layers = nn.ModuleList(SiglipEncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """float[B, C, S, S] in [-1, 1] -> float[B, P, D]"""
        x = self.embeddings(pixels)
        for layer in self.layers:
            x = layer(x)
        return self.post_layernorm(x)
