"""What Gemma 1 and Gemma 2 share: the KV cache, the prefix-LM mask, RoPE, RMSNorm, attention, the gated MLP and
the decoder skeleton (embed -> layers -> final norm -> tied head). Each family module supplies its block and says
which layers are windowed and whether logits are soft-capped; nothing here asks which family it is.

Axes: B batch, T query length, S key length, K kv heads, G queries per kv head, N = K*G query heads,
H head dim, D width, L layers, V vocabulary.

Limitations, stated rather than hidden: every row of a batch shares one prefix length (rows that share a prompt);
attention is computed eagerly because Gemma 2's logit soft-cap rules out the fused SDPA kernels, so long prefills
are processed in query chunks to bound memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TextConfig

# Query rows per attention chunk: bounds the fp32 score tensor of a 4k-token prefill to ~N * 1024 * S * 4 bytes.
_QUERY_CHUNK = 1024


class KVCache:
    """Keys and values for every layer, allocated once per request and written in place.

    Sliding layers keep the full length too; the mask hides what falls outside their window. That costs at most
    the window's worth of memory per sliding layer more than a ring buffer, and keeps one code path.
    """

    def __init__(self, cfg: TextConfig, max_len: int, prefix_len: int, batch: int = 1,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        if not 0 < prefix_len <= max_len:
            raise ValueError(f"prefix_len {prefix_len} must be in 1..max_len {max_len}")
        shape = (cfg.num_hidden_layers, batch, cfg.num_key_value_heads, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len, self.prefix_len = max_len, prefix_len

    @property
    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()


def prefix_lm_mask(start: int, length: int, prefix_len: int, window: int | None,
                   device: torch.device) -> torch.Tensor:
    """bool[T, S] with S = start + length: True where query t may attend to key s.

    The prefix (image tokens, <bos>, prompt, "\\n") attends to itself bidirectionally; every later token is
    causal. With a window, a non-prefix query sees only its last `window` keys (itself included); prefix pairs stay
    visible beyond the window, as in big_vision and transformers.
    """
    q = torch.arange(start, start + length, device=device)[:, None]
    s = torch.arange(start + length, device=device)[None, :]
    in_prefix = (q < prefix_len) & (s < prefix_len)
    causal = s <= q
    if window is not None:
        causal = causal & (q - s < window)
    return in_prefix | causal


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """positions long[T] -> (cos, sin) each [T, H], computed in fp32 then cast, as the reference does."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float, device=positions.device) / head_dim))
    freqs = positions[:, None].float() * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))  # stored as an offset from 1: the scale is (1 + w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Computed in fp32 and multiplied before casting back: Gemma's (x * w).to(dtype), not x.to(dtype) * w.
        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (out * (1.0 + self.weight.float())).type_as(x)


class Attention(nn.Module):
    """Grouped-query attention over the cache. `scale` and `softcap` are the family's: Gemma 1 scales by
    head_dim**-0.5 without a cap, Gemma 2 by query_pre_attn_scalar**-0.5 with a tanh cap before the mask."""

    def __init__(self, cfg: TextConfig, layer: int, scale: float, softcap: float | None):
        super().__init__()
        d, n, k, h = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.n_heads, self.n_kv, self.head_dim, self.layer = n, k, h, layer
        self.q_proj = nn.Linear(d, n * h, bias=False)
        self.k_proj = nn.Linear(d, k * h, bias=False)
        self.v_proj = nn.Linear(d, k * h, bias=False)
        self.o_proj = nn.Linear(n * h, d, bias=False)
        self.scale, self.softcap = scale, softcap

    def forward(self, x, cos, sin, cache: KVCache, start: int, mask: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # [B, N, T, H]
        k = self.k_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)  # [B, K, T, H]
        v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin

        end = start + t
        cache.k[self.layer, :, :, start:end] = k
        cache.v[self.layer, :, :, start:end] = v
        keys = cache.k[self.layer, :, :, :end].unsqueeze(2)  # [B, K, 1, S, H]: broadcast over G, never repeated
        values = cache.v[self.layer, :, :, :end].unsqueeze(2)

        q = q.view(b, self.n_kv, self.n_heads // self.n_kv, t, self.head_dim)  # [B, K, G, T, H]
        out = torch.cat([self._attend(q[:, :, :, i:i + _QUERY_CHUNK], keys, values, mask[i:i + _QUERY_CHUNK])
                         for i in range(0, t, _QUERY_CHUNK)], dim=3)
        out = out.reshape(b, self.n_heads, t, self.head_dim).transpose(1, 2).reshape(b, t, -1)
        return self.o_proj(out)

    def _attend(self, q, keys, values, mask):
        scores = torch.matmul(q, keys.transpose(-1, -2)) * self.scale  # [B, K, G, T, S]
        if self.softcap is not None:
            scores = torch.tanh(scores / self.softcap) * self.softcap
        scores = scores.masked_fill(~mask, float("-inf"))
        probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        return torch.matmul(probs, values)


class MLP(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class GemmaDecoder(nn.Module):
    """The skeleton both families share. A subclass sets `layer_class` (the block) and overrides `window(layer)`
    and `final_softcap` where its family differs."""

    layer_class: type[nn.Module]
    final_softcap: float | None = None

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(self.layer_class(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def window(self, layer: int) -> int | None:
        """The sliding window of `layer`, or None where it sees the whole sequence."""
        return None

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """long[B, T] -> float[B, T, D], scaled by sqrt(D) with the scale cast to the model dtype first
        (in bf16 sqrt(2304) = 48 exactly, but sqrt(3584) rounds; the reference rounds the same way)."""
        weight = self.embed_tokens.weight
        return F.embedding(ids, weight) * torch.tensor(self.cfg.hidden_size ** 0.5, dtype=weight.dtype)

    def forward(self, x: torch.Tensor, start: int, cache: KVCache) -> torch.Tensor:
        """float[B, T, D] embeddings at cache positions start..start+T-1 -> final-normed float[B, T, D]."""
        t = x.shape[1]
        if start + t > cache.max_len:
            raise ValueError(f"cache holds {cache.max_len} positions, asked to write up to {start + t}")
        # PaliGemma numbers positions from 1: the first prefix token is position 1.
        positions = torch.arange(start + 1, start + t + 1, device=x.device)
        cos, sin = rope_tables(positions, self.cfg.head_dim, self.cfg.rope_theta, x.dtype)
        masks: dict[int | None, torch.Tensor] = {}
        for i, layer in enumerate(self.layers):
            w = self.window(i)
            if w not in masks:
                masks[w] = prefix_lm_mask(start, t, cache.prefix_len, w, x.device)
            x = layer(x, cos, sin, cache, start, masks[w])
        return self.norm(x)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """float[B, T, D] -> float[B, T, V] through the tied head (and the family's final soft-cap)."""
        logits = F.linear(h, self.embed_tokens.weight)
        if (cap := self.final_softcap) is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits
