"""What Gemma 1 and Gemma 2 share: the KV cache, the prefix-LM mask, RoPE, RMSNorm, attention, the gated MLP and
the decoder skeleton (embed -> layers -> final norm -> tied head). Each family module supplies its block and says
which layers are windowed and whether logits are soft-capped; nothing here asks which family it is.

Axes: B batch, T query length, S key length, K kv heads, G queries per kv head, N = K*G query heads,
H head dim, D width, L layers, V vocabulary.

Two ways to call the decoder, one code path under both:
  start: int     the cache position of the first query, on the host: the cache is sliced to what is written so far
                 (prefill, and the reference loop the tests drive by hand);
  start: Tensor  long[B] on the device, one position per row (the static decode step, runtime/decode_step.py):
                 queries are scattered into the cache at each row's own position and attend over the whole
                 preallocated cache under a per-row mask built on the device, so every step has the same shapes and
                 no host sync (what a CUDA graph needs), and rows of one batch may hold prompts of different lengths.

Limitations, stated rather than hidden: a host-int prefill shares one prefix length across its rows (the batch
runner prefills rows of different lengths apart, each into its own rows of the cache: `KVCache.rows`);
attention is computed eagerly because Gemma 2's logit soft-cap rules out the fused SDPA kernels, so long prefills
are processed in query chunks (sized in chunking.py).

A prefill that needs only the last position's logits (generation: `last_only`) runs the last layer for that one
query: its keys and values are still computed and cached for every position, but its query, attention, output
projection and MLP for the other positions would feed nothing, since no later layer reads them. Exact; it saves
one layer in L of the prefill (a quarter of a 4-layer bench model's, 1/26 of the 3B's).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from .chunking import query_chunk
from .config import TextConfig
from .linear import Linear, linear

# Score tensors up to this many elements (a decode step's, ~35k at a 4k context) are computed on one CPU thread.
_SERIAL_SCORES = 1 << 18


@contextlib.contextmanager
def _one_cpu_thread(active: bool):
    """Run a few tiny ops on one thread. Each op of a decode step's attention is microseconds of work but, above
    PyTorch's grain size, a parallel region whose cost is waking the other threads; with any other load on the
    machine that wake-up waits for a time slice. Measured at a 4k context on 2 shared cores: 250 -> 85 ms a step."""
    if not active:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class KVCache:
    """Keys and values for every layer, allocated once and written in place.

    Sliding layers keep the full length too; the mask hides what falls outside their window. That costs at most
    the window's worth of memory per sliding layer more than a ring buffer, and keeps one code path. A cache can
    serve request after request (the static decode step keeps one per length bucket): `begin(prefix_len)` starts
    the next one; what an earlier request left beyond the new prefix is hidden by the causal mask until overwritten.
    """

    def __init__(self, cfg: TextConfig, max_len: int, prefix_len: int, batch: int = 1,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        shape = (cfg.num_hidden_layers, batch, cfg.num_key_value_heads, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.begin(prefix_len)

    def begin(self, prefix_len: int) -> None:
        if not 0 < prefix_len <= self.max_len:
            raise ValueError(f"prefix_len {prefix_len} must be in 1..max_len {self.max_len}")
        self.prefix_len = prefix_len

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    def rows(self, first: int, stop: int, prefix_len: int) -> "KVCache":
        """A cache over rows first..stop-1 of this one (views: what it writes lands here), for prefilling those rows
        alone with their own prefix length while the other rows keep theirs."""
        view = object.__new__(KVCache)
        view.k, view.v, view.max_len = self.k[:, first:stop], self.v[:, first:stop], self.max_len
        view.begin(prefix_len)
        return view

    @property
    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()


def prefix_lm_mask(queries: torch.Tensor, key_len: int, prefix_len: int, window: int | None) -> torch.Tensor:
    """queries long[T] (their cache positions) -> bool[T, S] with S = key_len: True where query t may see key s.

    The prefix (image tokens, <bos>, prompt, "\\n") attends to itself bidirectionally; every later token is
    causal. With a window, a non-prefix query sees only its last `window` keys (itself included); prefix pairs stay
    visible beyond the window, as in big_vision and transformers.
    """
    q = queries[:, None]
    s = torch.arange(key_len, device=queries.device)[None, :]
    in_prefix = (q < prefix_len) & (s < prefix_len)
    return in_prefix | _causal(q, s, window)


def decode_mask(queries: torch.Tensor, key_len: int, window: int | None) -> torch.Tensor:
    """prefix_lm_mask for queries past the prefix, where the prefix term is always False: it needs no prefix length,
    so a captured step stays valid for any request's prefix. queries long[..., T] -> bool[..., T, S]."""
    s = torch.arange(key_len, device=queries.device)
    return _causal(queries[..., None], s, window)


def _causal(q: torch.Tensor, s: torch.Tensor, window: int | None) -> torch.Tensor:
    causal = s <= q
    if window is not None:
        causal = causal & (q - s < window)
    return causal


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """positions long[..., T] -> (cos, sin) each [..., T, H], computed in fp32 then cast, as the reference does."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float, device=positions.device) / head_dim))
    freqs = positions[..., None].float() * inv_freq
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


class FusedLinear(Linear):
    """Projections that read the same input, stacked along the output dim so they run as one matmul (one pass over
    the input and one kernel instead of three). `parts` names the checkpoint tensors in stacking order with their
    output sizes; the loader fills each slice from its own tensor, so checkpoints keep their names."""

    def __init__(self, in_features: int, parts: dict[str, int]):
        super().__init__(in_features, sum(parts.values()), bias=False)
        self.parts = tuple(parts.items())

    def split(self, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return y.split([size for _, size in self.parts], dim=-1)


class Attention(nn.Module):
    """Grouped-query attention over the cache. `scale` and `softcap` are the family's: Gemma 1 scales by
    head_dim**-0.5 without a cap, Gemma 2 by query_pre_attn_scalar**-0.5 with a tanh cap before the mask."""

    def __init__(self, cfg: TextConfig, layer: int, scale: float, softcap: float | None):
        super().__init__()
        d, n, k, h = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.n_heads, self.n_kv, self.head_dim, self.layer = n, k, h, layer
        self.qkv_proj = FusedLinear(d, {"q_proj": n * h, "k_proj": k * h, "v_proj": k * h})
        self.o_proj = Linear(n * h, d, bias=False)
        self.scale, self.softcap = scale, softcap

    def forward(self, x, cos, sin, cache: KVCache, start: int | torch.Tensor,
                mask: torch.Tensor | None, last_only: bool = False) -> torch.Tensor:
        """x [B, T, D] -> [B, T, D], or [B, 1, D] for the last position alone when `last_only` (keys and values
        are still written for all T). `mask` bool[T, S], or None where every query sees every key (a prefill of
        the prefix alone)."""
        b, t, _ = x.shape
        if last_only and t > 1:
            nq = self.n_heads * self.head_dim
            q = self.qkv_proj.rows(x[:, -1:], 0, nq)
            k, v = self.qkv_proj.rows(x, nq).split(self.n_kv * self.head_dim, dim=-1)
            q_cos, q_sin = cos[..., -1:, :], sin[..., -1:, :]
            mask = None if mask is None else mask[..., -1:, :]
        else:
            q, k, v = self.qkv_proj.split(self.qkv_proj(x))
            q_cos, q_sin = cos, sin
        tq = q.shape[1]
        q = q.view(b, tq, self.n_heads, self.head_dim).transpose(1, 2)  # [B, N, Tq, H]
        k = k.view(b, t, self.n_kv, self.head_dim).transpose(1, 2)  # [B, K, T, H]
        v = v.view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        q = q * q_cos + _rotate_half(q) * q_sin
        k = k * cos + _rotate_half(k) * sin

        cache_k, cache_v = cache.k[self.layer], cache.v[self.layer]  # [B, K, S_max, H], views into the cache
        if isinstance(start, torch.Tensor):
            at = start[:, None] + torch.arange(t, device=start.device)  # long[B, T]: each row at its own position
            if x.device.type == "cpu":
                # index_copy_ per row: on the CPU, scatter_ copies the whole cache once per call (two full copies
                # per layer and step: 11 ms of a 3B decode step at 512 positions, measured), index_copy_ does not
                for row in range(b):
                    cache_k[row].index_copy_(1, at[row], k[row])
                    cache_v[row].index_copy_(1, at[row], v[row])
            else:  # one kernel for every row, no host sync: what a CUDA graph captures
                at = at[:, None, :, None].expand(b, self.n_kv, t, self.head_dim)
                cache_k.scatter_(2, at, k)
                cache_v.scatter_(2, at, v)
            keys, values = cache_k, cache_v  # static shape: the mask hides what is not written yet
        else:
            end = start + t
            cache_k[:, :, start:end] = k
            cache_v[:, :, start:end] = v
            keys, values = cache_k[:, :, :end], cache_v[:, :, :end]

        rows = query_chunk(b * self.n_heads, keys.shape[2], x.device)
        if tq <= rows:
            out = self._attend(q, keys, values, mask)
        else:
            out = torch.cat([self._attend(q[:, :, i:i + rows], keys, values,
                                          None if mask is None else mask[..., i:i + rows, :])
                             for i in range(0, tq, rows)], dim=2)
        return self.o_proj(out.transpose(1, 2).reshape(b, tq, -1))

    def _attend(self, q, keys, values, mask):
        """q [B, N, T, H], keys/values [B, K, S, H] -> [B, N, T, H].

        The G query heads that share a kv head are folded into the rows: [B, K, G*T, H] @ [B, K, H, S]. Broadcasting
        q [B, K, G, T, H] against keys [B, K, 1, S, H] instead makes matmul copy K and V G times on every call
        (78% of the attention time in decode, measured); this reads them where they lie."""
        b, n, t, h = q.shape
        small = q.device.type == "cpu" and b * n * t * keys.shape[2] <= _SERIAL_SCORES
        with _one_cpu_thread(small):
            return self._scores_to_output(q, keys, values, mask)

    def _scores_to_output(self, q, keys, values, mask):
        b, n, t, h = q.shape
        g = n // self.n_kv
        rows = q.reshape(b, self.n_kv, g * t, h)  # a view for decode (T = 1); a small copy of q otherwise
        scores = torch.matmul(rows, keys.transpose(-1, -2))  # [B, K, G*T, S]
        scores.mul_(self.scale)  # in place, in the reference's op order: same rounding, no extra [.., S] buffers
        if self.softcap is not None:
            scores.div_(self.softcap).tanh_().mul_(self.softcap)
        if mask is not None:
            if mask.dim() == 3:  # bool[B, T, S], per row (decode): [B, 1, 1, T, S] broadcasts over K and G
                mask = mask[:, None, None]
            scores.view(b, self.n_kv, g, t, -1).masked_fill_(~mask, float("-inf"))  # mask [T, S] broadcasts over G
        probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        return torch.matmul(probs, values).view(b, n, t, h)


class MLP(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.gate_up_proj = FusedLinear(cfg.hidden_size, {"gate_proj": cfg.intermediate_size,
                                                          "up_proj": cfg.intermediate_size})
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj.split(self.gate_up_proj(x))
        return self.down_proj(F.gelu(gate, approximate="tanh") * up)


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
        # A fine-tune saved with tie_word_embeddings false has an output head of its own.
        self.lm_head = None if cfg.tie_word_embeddings else Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def window(self, layer: int) -> int | None:
        """The sliding window of `layer`, or None where it sees the whole sequence."""
        return None

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """long[B, T] -> float[B, T, D], scaled by sqrt(D) with the scale cast to the model dtype first
        (in bf16 sqrt(2304) = 48 exactly, but sqrt(3584) rounds; the reference rounds the same way)."""
        x = self.embed_tokens(ids)  # an int8 embedding (model/quant.py) dequantizes only these rows
        return x * torch.tensor(self.cfg.hidden_size ** 0.5, dtype=x.dtype)

    def forward(self, x: torch.Tensor, start: int | torch.Tensor, cache: KVCache,
                last_only: bool = False) -> torch.Tensor:
        """float[B, T, D] embeddings at cache positions start..start+T-1 -> final-normed float[B, T, D], or
        float[B, 1, D] for the last position when `last_only` (every position's keys and values are cached).

        `start` a host int: the cache is sliced to start+T keys. `start` a device long[B], one position per row
        (decode past the prefix only): the whole cache is attended under a per-row mask computed on the device;
        nothing here syncs with the host.
        """
        t = x.shape[1]
        if isinstance(start, torch.Tensor):
            queries = start[:, None] + torch.arange(t, device=x.device)  # long[B, T]

            def mask_for(w):
                return decode_mask(queries, cache.max_len, w)  # bool[B, T, S]
        else:
            if start + t > cache.max_len:
                raise ValueError(f"cache holds {cache.max_len} positions, asked to write up to {start + t}")
            queries = torch.arange(start, start + t, device=x.device)
            all_prefix = start + t <= cache.prefix_len  # every pair visible: skip building and applying a mask

            def mask_for(w):
                return None if all_prefix else prefix_lm_mask(queries, start + t, cache.prefix_len, w)
        # PaliGemma numbers positions from 1: the first prefix token is position 1.
        cos, sin = rope_tables(queries + 1, self.cfg.head_dim, self.cfg.rope_theta, x.dtype)
        if queries.dim() == 2:
            cos, sin = cos[:, None], sin[:, None]  # [B, 1, T, H]: per row, broadcast over heads
        masks: dict[int | None, torch.Tensor | None] = {}
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            w = self.window(i)
            if w not in masks:
                masks[w] = mask_for(w)
            x = layer(x, cos, sin, cache, start, masks[w], last_only=last_only and i == last)
        return self.norm(x)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """float[B, T, D] -> float[B, T, V] through the head (tied: the embedding) and the family's final soft-cap."""
        head = self.embed_tokens if self.lm_head is None else self.lm_head
        logits = head.project(h) if hasattr(head, "project") else linear(h, head.weight)  # project: int8 head
        if (cap := self.final_softcap) is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits
