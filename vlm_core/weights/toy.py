"""Random-weight PaliGemma 2 checkpoints in the Hub's exact layout, at toy size.

Real weights never load on the machines this project is built and tested on, so everything that reads a checkpoint
is exercised on these: a sparse config.json with the Hub's stale fields, safetensors shards with an index, keys in
any of the three spellings found in the wild, a SentencePiece tokenizer with Gemma's special ids and PaliGemma's
<locNNNN>/<segNNN> symbols, and preprocessor/generation configs. Every feature of the architecture is switched on:
grouped-query attention, head_dim * heads != hidden, query_pre_attn_scalar != head_dim, a sliding window shorter
than a prompt, and soft-caps small enough to bite.

    python -m vlm_core make-toy DIR
"""

from __future__ import annotations

import io
import json
import math
import random
from pathlib import Path

import torch

SPELLINGS = ("hub", "transformers4", "transformers5")

TOY_TEXT = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 24, "query_pre_attn_scalar": 32, "sliding_window": 8,
    "attn_logit_softcapping": 5.0, "final_logit_softcapping": 8.0,
}
TOY_VISION = {
    "hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
    "patch_size": 14, "image_size": 56,
}

# Large enough that memory and speed figures mean something (133M parameters), small enough for a CPU.
MEDIUM_TEXT = {
    "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 8, "num_attention_heads": 8,
    "num_key_value_heads": 4, "head_dim": 128, "query_pre_attn_scalar": 128, "sliding_window": 64,
}
MEDIUM_VISION = {
    "hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 4, "num_attention_heads": 6,
    "patch_size": 14, "image_size": 224,
}

_WORDS = ("a cat dog bird sits on the red blue green table chair under over near small big old new photo of "
          "picture two three people street car tree house window sky cloud water river boat with and in is are "
          "white black yellow orange garden kitchen book cup plate food man woman child playing running").split()


def hub_name(canonical: str, spelling: str = "hub") -> str:
    """The checkpoint key for one of our parameter names, in the given spelling."""
    first, rest = canonical.split(".", 1)
    vision_model = "" if spelling == "transformers5" else "vision_model."
    if first == "vision":
        sub = rest if rest.startswith(("embeddings.", "post_layernorm.")) else "encoder." + rest
        name = f"vision_tower.{vision_model}{sub}"
    elif first == "projector":
        name = f"multi_modal_projector.linear.{rest}"
    elif first == "text":
        name = f"language_model.model.{rest}" if spelling == "hub" else f"language_model.{rest}"
    else:
        raise ValueError(f"Unknown parameter: {canonical}")
    if spelling not in SPELLINGS:
        raise ValueError(f"Unknown spelling: {spelling}")
    return name if spelling == "hub" else "model." + name


def train_tokenizer(vocab_size: int = 1700, seed: int = 0) -> bytes:
    """A SentencePiece model with Gemma's ids (pad 0, eos 1, bos 2, unk 3), byte fallback, and PaliGemma's
    location and segmentation symbols; returns the serialized model."""
    import sentencepiece as spm

    rng = random.Random(seed)
    lines = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 12))) for _ in range(3000)]
    lines += ["Ünïcödé café 東京 😀 naïve résumé"] * 20  # gives multi-byte pieces and byte-fallback practice
    symbols = ["\n"] + [f"<loc{i:04d}>" for i in range(1024)] + [f"<seg{i:03d}>" for i in range(128)]
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=out, vocab_size=vocab_size, model_type="bpe",
        user_defined_symbols=symbols, byte_fallback=True, normalization_rule_name="identity",
        add_dummy_prefix=False, remove_extra_whitespaces=False, split_digits=True,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", num_threads=1, minloglevel=2, character_coverage=1.0,
    )
    return out.getvalue()


def toy_config(tokenizer_vocab: int, text: dict | None = None, vision: dict | None = None) -> dict:
    """A sparse config.json as the Hub writes it: defaults left out, stale fields left in."""
    text = {**TOY_TEXT, **(text or {})}
    vision = {**TOY_VISION, **(vision or {})}
    num_image_tokens = (vision["image_size"] // vision["patch_size"]) ** 2
    image_token_index = tokenizer_vocab  # as on the Hub: the first id after the SentencePiece vocabulary
    vocab = math.ceil((image_token_index + 1) / 64) * 64  # the Hub pads the embedding to a multiple of 64
    return {
        "_vocab_size": image_token_index,
        "architectures": ["PaliGemmaForConditionalGeneration"],
        "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
        "hidden_size": 2048,  # stale: PaliGemma 1's width, ignored
        "image_token_index": image_token_index,
        "model_type": "paligemma",
        "projection_dim": text["hidden_size"],
        "text_config": {"model_type": "gemma2", "num_image_tokens": num_image_tokens, "vocab_size": vocab,
                        "hidden_activation": "gelu_pytorch_tanh", "torch_dtype": "float32", **text},
        "torch_dtype": "float32",
        "transformers_version": "4.47.0.dev0",
        "vision_config": {"model_type": "siglip_vision_model", "num_image_tokens": num_image_tokens,
                          "num_positions": 999,  # stale, ignored
                          "projection_dim": text["hidden_size"], "vision_use_head": False, **vision},
    }


def random_state_dict(cfg_dict: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights in our parameter names, scaled so that greedy decoding wanders instead of repeating one token."""
    from ..model.config import PaliGemmaConfig
    from ..model.paligemma import PaliGemma

    from .loader import checkpoint_shapes

    cfg = PaliGemmaConfig.from_dict(cfg_dict)
    with torch.device("meta"):
        shapes = checkpoint_shapes(PaliGemma(cfg))  # the checkpoint's tensors: fused q/k/v and gate/up split
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in shapes.items():
        if name.endswith("norm.weight") and name.startswith("text."):
            t = torch.randn(shape, generator=g) * 0.2  # RMSNorm stores (scale - 1)
        elif "norm" in name and name.endswith(".weight"):
            t = 1 + torch.randn(shape, generator=g) * 0.2
        elif name.endswith(".bias"):
            t = torch.randn(shape, generator=g) * 0.1
        elif name == "text.embed_tokens.weight":
            t = torch.randn(shape, generator=g) * 0.05  # keep the tied head from echoing the input token
        elif name == "vision.embeddings.position_embedding.weight":
            t = torch.randn(shape, generator=g)
        else:
            fan_in = math.prod(shape[1:])
            t = torch.randn(shape, generator=g) * (1.5 / math.sqrt(fan_in))
        state[name] = t.contiguous()
    # As in the released checkpoints, rows past the tokenizer (the image placeholder and the padding) are zero.
    state["text.embed_tokens.weight"][cfg.image_token_index:] = 0
    return state


def write_checkpoint(path: str | Path, *, spelling: str = "hub", shards: int = 2, dtype: torch.dtype = torch.float32,
                     seed: int = 0, text: dict | None = None, vision: dict | None = None,
                     tokenizer_model: bytes | None = None) -> Path:
    """Write a complete toy model folder; returns its path."""
    from safetensors.torch import save_file

    from ..runtime.tokenizer import Tokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "tokenizer.model").write_bytes(tokenizer_model or train_tokenizer())
    vocab = Tokenizer(path / "tokenizer.model").vocab_size
    cfg = toy_config(vocab, text, vision)
    (path / "config.json").write_text(json.dumps(cfg, indent=2))

    state = {hub_name(k, spelling): v.to(dtype) for k, v in random_state_dict(cfg, seed).items()}
    if spelling != "hub":  # transformers' own saves carry the tied head
        state["lm_head.weight"] = state[hub_name("text.embed_tokens.weight", spelling)].clone()
    names = sorted(state)
    if shards <= 1:
        save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    else:
        per = math.ceil(len(names) / shards)
        weight_map = {}
        for i in range(shards):
            fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            part = {k: state[k] for k in names[i * per:(i + 1) * per]}
            save_file(part, str(path / fname), metadata={"format": "pt"})
            weight_map.update({k: fname for k in part})
        total = sum(t.numel() * t.element_size() for t in state.values())
        (path / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))

    size = cfg["vision_config"]["image_size"]
    (path / "preprocessor_config.json").write_text(json.dumps({
        "do_convert_rgb": None, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "image_processor_type": "SiglipImageProcessor",
        "image_seq_length": (size // cfg["vision_config"]["patch_size"]) ** 2, "processor_class": "PaliGemmaProcessor",
        "resample": 3, "rescale_factor": 1 / 255, "size": {"height": size, "width": size},
    }, indent=2))
    (path / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0, "transformers_version": "4.47.0.dev0"}, indent=2))
    return path
