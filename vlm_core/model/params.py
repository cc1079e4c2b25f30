"""The tensors a config implies, by canonical name and shape, from arithmetic alone.

Torch-free on purpose: `python -m vlm_core info` and the model picker count parameters and memory from config.json
without building a model, and the toy-checkpoint writer draws its random weights from this list. The names are the
checkpoint-side ones (q/k/v and gate/up as separate tensors, the way every checkpoint stores them), in our module
tree's spelling; a test builds the model on the meta device and checks both agree.
"""

from __future__ import annotations

from math import prod

from .config import PaliGemmaConfig

_GEMMA_NORMS = {"gemma": ("input_layernorm", "post_attention_layernorm"),
                "gemma2": ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                           "post_feedforward_layernorm")}


def tensor_shapes(cfg: PaliGemmaConfig) -> dict[str, tuple[int, ...]]:
    v, t = cfg.vision, cfg.text
    e, p = v.hidden_size, v.patch_size
    shapes: dict[str, tuple[int, ...]] = {
        "vision.embeddings.patch_embedding.weight": (e, 3, p, p),
        "vision.embeddings.patch_embedding.bias": (e,),
        "vision.embeddings.position_embedding.weight": (v.num_patches, e),
    }
    for i in range(v.num_hidden_layers):
        pre = f"vision.layers.{i}."
        for norm in ("layer_norm1", "layer_norm2"):
            shapes[pre + norm + ".weight"] = shapes[pre + norm + ".bias"] = (e,)
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{pre}self_attn.{proj}.weight"], shapes[f"{pre}self_attn.{proj}.bias"] = (e, e), (e,)
        shapes[pre + "mlp.fc1.weight"], shapes[pre + "mlp.fc1.bias"] = (v.intermediate_size, e), (v.intermediate_size,)
        shapes[pre + "mlp.fc2.weight"], shapes[pre + "mlp.fc2.bias"] = (e, v.intermediate_size), (e,)
    shapes["vision.post_layernorm.weight"] = shapes["vision.post_layernorm.bias"] = (e,)

    d = t.hidden_size
    shapes["projector.weight"], shapes["projector.bias"] = (d, e), (d,)
    shapes["text.embed_tokens.weight"] = (t.vocab_size, d)
    q, kv = t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
    for i in range(t.num_hidden_layers):
        pre = f"text.layers.{i}."
        shapes.update({pre + "self_attn.q_proj.weight": (q, d), pre + "self_attn.k_proj.weight": (kv, d),
                       pre + "self_attn.v_proj.weight": (kv, d), pre + "self_attn.o_proj.weight": (d, q),
                       pre + "mlp.gate_proj.weight": (t.intermediate_size, d),
                       pre + "mlp.up_proj.weight": (t.intermediate_size, d),
                       pre + "mlp.down_proj.weight": (d, t.intermediate_size)})
        for norm in _GEMMA_NORMS[t.family]:
            shapes[f"{pre}{norm}.weight"] = (d,)
    shapes["text.norm.weight"] = (d,)
    if not t.tie_word_embeddings:
        shapes["text.lm_head.weight"] = (t.vocab_size, d)
    return shapes


def parameter_count(cfg: PaliGemmaConfig) -> int:
    """Every parameter once: a tied head is the embedding and adds nothing."""
    return sum(prod(s) for s in tensor_shapes(cfg).values())


def _group(k: int, most: int = 128) -> int:  # model/quant.group_size, restated here to stay torch-free
    return next(g for g in range(min(k, most), 0, -1) if k % g == 0)


def scheme_bytes(cfg: PaliGemmaConfig, float_bytes: int = 2) -> dict[str, int]:
    """Weight bytes under each quantization scheme (model/quant.py), the float parts at `float_bytes` each:
    {"none": ..., "int8": ..., "int4": ...}. int8: 1 byte per weight + a bf16 scale per row; int4: half a byte per
    weight + a bf16 scale and zero per group; the embedding/head is int8 per row under both."""
    sizes = {"none": 0, "int8": 0, "int4": 0}
    for name, shape in tensor_shapes(cfg).items():
        n = prod(shape)
        sizes["none"] += n * float_bytes
        if name in ("text.embed_tokens.weight", "text.lm_head.weight"):
            sizes["int8"] += n + shape[0] * 2
            sizes["int4"] += n + shape[0] * 2
        elif name.startswith("text.layers.") and len(shape) == 2:
            rows, k = shape
            sizes["int8"] += n + rows * 2
            sizes["int4"] += n // 2 + rows * (k // _group(k)) * 4
        else:
            sizes["int8"] += n * float_bytes
            sizes["int4"] += n * float_bytes
    return sizes
