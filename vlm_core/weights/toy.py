"""Random-weight PaliGemma checkpoints in the Hub's exact layout, at toy size.

Real weights never load on the machines this project is built and tested on, so everything that reads a checkpoint
is exercised on these: config.json, safetensors shards with an index, keys in any of the three spellings found in the
wild, a SentencePiece tokenizer with Gemma's special ids and PaliGemma's <locNNNN>/<segNNN> symbols, and
preprocessor/generation configs. Two sorts:

- `kind="toy"` (the default): every feature of the architecture switched on, to prove the math: grouped-query
  attention, head_dim * heads != hidden, query_pre_attn_scalar != head_dim, a sliding window shorter than a prompt,
  and soft-caps small enough to bite.
- `kind=` one of HUB_KINDS: the released checkpoints' files, key for key. `hub_config(kind)` is the full-size
  config.json as the Hub serves it (reconstructed from the converters' source and checked against public copies);
  the toy keeps exactly its key set and changes only the numbers, so a default the Hub leaves out stays left out
  (the 3B has no num_attention_heads, so its toy has Gemma 2's 8 heads of 256), and the weights carry exactly the
  Hub's tensor names, dtype and shard count.

    python -m vlm_core make-toy DIR [--kind paligemma2-28b]
"""

from __future__ import annotations

import io
import json
import math
import random
import zlib
from pathlib import Path

import torch

SPELLINGS = ("hub", "transformers4", "transformers5")
HUB_KINDS = ("paligemma2-3b", "paligemma2-10b", "paligemma2-28b", "paligemma-3b")
HEADS = ("tied", "separate")  # separate: tie_word_embeddings false and an lm_head.weight of its own

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

# What each released text decoder writes beyond the Gemma 2 defaults (the 3B's heads and head_dim are defaults).
_PG2_TEXT = {
    "3b": {"hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26, "num_key_value_heads": 4},
    "10b": {"hidden_size": 3584, "intermediate_size": 14336, "num_hidden_layers": 42, "num_key_value_heads": 8,
            "num_attention_heads": 16},
    "28b": {"hidden_size": 4608, "intermediate_size": 36864, "num_hidden_layers": 46, "num_key_value_heads": 16,
            "num_attention_heads": 32, "head_dim": 128, "query_pre_attn_scalar": 144},
}
# The toy numbers for each kind; every key here must already be in that kind's config (the key set never changes).
_TINY_TEXT = {
    "paligemma2-3b": {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3, "num_key_value_heads": 2},
    "paligemma2-10b": {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3, "num_key_value_heads": 2,
                       "num_attention_heads": 4},
    "paligemma2-28b": {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3, "num_key_value_heads": 2,
                       "num_attention_heads": 4, "head_dim": 16, "query_pre_attn_scalar": 24},
    "paligemma-3b": {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3, "num_attention_heads": 4,
                     "num_key_value_heads": 1},
}
_TINY_GEMMA2 = {"sliding_window": 6, "attn_logit_softcapping": 5.0, "final_logit_softcapping": 8.0}  # all bite
_TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
                "patch_size": 56}  # 16 image tokens at 224 px, 64 at 448
# Shards as transformers' 5 GB limit split the released bfloat16 (PaliGemma 2) and float32 (PaliGemma 1) files.
_HUB_SHARDS = {"paligemma2-3b": 2, "paligemma2-10b": 4, "paligemma2-28b": 12, "paligemma-3b": 3}
_HUB_DTYPE = {"paligemma2-3b": torch.bfloat16, "paligemma2-10b": torch.bfloat16, "paligemma2-28b": torch.bfloat16,
              "paligemma-3b": torch.float32}


def hub_config(kind: str, image_size: int = 224, mix: bool = False) -> dict:
    """config.json of google/<kind>-{pt,mix}-<image_size>, full size, key for key as the Hub serves it."""
    if kind not in HUB_KINDS:
        raise ValueError(f"Unknown kind: {kind}")
    family, size = kind.split("-")
    tokens = (image_size // 14) ** 2
    sub_dtype = "float32" if mix else ("bfloat16" if family == "paligemma2" else "float32")
    vision = {"hidden_size": 1152, "intermediate_size": 4304, "model_type": "siglip_vision_model",
              "num_attention_heads": 16, "num_hidden_layers": 27, "num_image_tokens": tokens}
    if family == "paligemma2":
        text = {"architectures": ["Gemma2ForCausalLM"], "attn_logit_softcapping": 50.0,
                "cache_implementation": "hybrid", "eos_token_id": [1, 107], "final_logit_softcapping": 30.0,
                "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh", "model_type": "gemma2",
                "num_image_tokens": tokens, "query_pre_attn_scalar": 256, "sliding_window": 4096,
                "torch_dtype": sub_dtype, "vocab_size": 257216, **_PG2_TEXT[size]}
        width = text["hidden_size"]
        vision.update(num_positions=256,  # stale: the 224 px value at every resolution
                      patch_size=14, projection_dim=width, torch_dtype=sub_dtype, vision_use_head=False)
        top = {"_vocab_size": 257152, "architectures": ["PaliGemmaForConditionalGeneration"], "bos_token_id": 2,
               "eos_token_id": 1, "image_token_index": 257152, "model_type": "paligemma",
               "num_hidden_layers": text["num_hidden_layers"], "pad_token_id": 0, "projection_dim": width,
               "torch_dtype": "bfloat16", "transformers_version": "4.47.0.dev0"}
    else:
        text = {"hidden_size": 2048, "intermediate_size": 16384, "model_type": "gemma", "num_attention_heads": 8,
                "num_hidden_layers": 18, "num_image_tokens": tokens, "num_key_value_heads": 1,
                "torch_dtype": sub_dtype, "vocab_size": 257216}
        vision.update(patch_size=14, projection_dim=2048,
                      projector_hidden_act="gelu_fast",  # metadata: the projector is linear
                      torch_dtype=sub_dtype, vision_use_head=False)
        top = {"architectures": ["PaliGemmaForConditionalGeneration"], "bos_token_id": 2, "eos_token_id": 1,
               "hidden_size": 2048, "ignore_index": -100, "image_token_index": 257152, "model_type": "paligemma",
               "pad_token_id": 0, "projection_dim": 2048, "torch_dtype": "float32",
               "transformers_version": "4.41.0.dev0", "vocab_size": 257216}
    if image_size != 224:
        vision["image_size"] = image_size
    return dict(sorted({**top, "text_config": dict(sorted(text.items())),
                        "vision_config": dict(sorted(vision.items()))}.items()))


def tiny_hub_config(kind: str, tokenizer_vocab: int, image_size: int = 224, mix: bool = False) -> dict:
    """hub_config(kind) with toy numbers in the same keys: same key set, same defaults left to the parser."""
    cfg = json.loads(json.dumps(hub_config(kind, image_size, mix)))
    text, vision = cfg["text_config"], cfg["vision_config"]
    tiny_text = {**_TINY_TEXT[kind], **(_TINY_GEMMA2 if kind.startswith("paligemma2") else {})}
    for sub, tiny in ((text, tiny_text), (vision, _TINY_VISION)):
        missing = set(tiny) - set(sub)
        assert not missing, f"{kind}: {missing} would add keys the Hub's config does not have"
        sub.update(tiny)
    size = image_size if "image_size" in vision else 224
    tokens = (size // vision["patch_size"]) ** 2
    text["num_image_tokens"] = vision["num_image_tokens"] = tokens
    if "num_positions" in vision:
        vision["num_positions"] = (224 // vision["patch_size"]) ** 2  # stale, as on the Hub
    vocab = math.ceil((tokenizer_vocab + 1) / 64) * 64  # the Hub pads the embedding to a multiple of 64
    text["vocab_size"] = vocab
    vision["projection_dim"] = cfg["projection_dim"] = text["hidden_size"]
    cfg["image_token_index"] = tokenizer_vocab  # the first id after the SentencePiece vocabulary
    for key, value in (("_vocab_size", tokenizer_vocab), ("vocab_size", vocab), ("hidden_size", text["hidden_size"]),
                       ("num_hidden_layers", text["num_hidden_layers"])):
        if key in cfg:
            cfg[key] = value
    return cfg


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


def _random_tensor(name: str, shape: tuple[int, ...], g: torch.Generator, image_token_index: int) -> torch.Tensor:
    if name.endswith("norm.weight") and name.startswith("text."):
        t = torch.randn(shape, generator=g) * 0.2  # RMSNorm stores (scale - 1)
    elif "norm" in name and name.endswith(".weight"):
        t = 1 + torch.randn(shape, generator=g) * 0.2
    elif name.endswith(".bias"):
        t = torch.randn(shape, generator=g) * 0.1
    elif name in ("text.embed_tokens.weight", "text.lm_head.weight"):
        t = torch.randn(shape, generator=g) * 0.05  # keep the tied head from echoing the input token
    elif name == "vision.embeddings.position_embedding.weight":
        t = torch.randn(shape, generator=g)
    else:
        fan_in = math.prod(shape[1:])
        t = torch.randn(shape, generator=g) * (1.5 / math.sqrt(fan_in))
    if name == "text.embed_tokens.weight":
        # As in the released checkpoints, rows past the tokenizer (the image placeholder and the padding) are zero.
        t[image_token_index:] = 0
    return t.contiguous()


def random_state_dict(cfg_dict: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights in our parameter names (the checkpoint's tensors: q/k/v and gate/up apart), scaled so that greedy
    decoding wanders instead of repeating one token."""
    from ..model.config import PaliGemmaConfig
    from ..model.params import tensor_shapes

    cfg = PaliGemmaConfig.from_dict(cfg_dict)
    g = torch.Generator().manual_seed(seed)
    return {name: _random_tensor(name, shape, g, cfg.image_token_index) for name, shape in tensor_shapes(cfg).items()}


def _stream_tensor(name: str, shape: tuple[int, ...], seed: int, image_token_index: int,
                   dtype: torch.dtype) -> torch.Tensor:
    """One tensor of a big checkpoint, from a generator seeded by its name: the same whatever order they are made
    in, so a shard can be written without holding the others (the 10B is 38 GB in float32)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    return _random_tensor(name, shape, g, image_token_index).to(dtype)


STREAM_ABOVE_BYTES = 4 << 30  # float32 size past which tensors are made one shard at a time
def write_checkpoint(path: str | Path, *, kind: str = "toy", spelling: str = "hub", shards: int | None = None,
                     dtype: torch.dtype | None = None, seed: int = 0, text: dict | None = None,
                     vision: dict | None = None, image_size: int = 224, head: str = "tied",
                     tokenizer_model: bytes | None = None) -> Path:
    """Write a complete toy model folder; returns its path.

    kind "toy" takes `text`/`vision` overrides; a HUB_KINDS kind takes `image_size`, and defaults to the Hub's shard
    count and dtype. head "separate" writes tie_word_embeddings false and an lm_head of its own."""
    import sentencepiece as spm

    from ..model.config import PaliGemmaConfig
    from ..model.params import tensor_shapes

    if head not in HEADS:
        raise ValueError(f"Unknown head: {head}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "tokenizer.model").write_bytes(tokenizer_model or train_tokenizer())
    vocab = spm.SentencePieceProcessor(model_file=str(path / "tokenizer.model")).get_piece_size()
    if kind == "toy":
        cfg = toy_config(vocab, text, vision)
    elif text or vision:
        raise ValueError(f"{kind} keeps the Hub's key set: text/vision overrides are for kind 'toy'")
    else:
        cfg = tiny_hub_config(kind, vocab, image_size)
    if head == "separate":
        cfg["tie_word_embeddings"] = False
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    shards = max(1, shards if shards is not None else _HUB_SHARDS.get(kind, 2))
    dtype = dtype if dtype is not None else _HUB_DTYPE.get(kind, torch.float32)

    parsed = PaliGemmaConfig.from_dict(cfg)
    shapes = tensor_shapes(parsed)
    if 4 * sum(math.prod(s) for s in shapes.values()) > STREAM_ABOVE_BYTES:
        _write_streamed(path, shapes, parsed.image_token_index, spelling, shards, dtype, seed)
    else:
        _write_tensors(path, random_state_dict(cfg, seed), spelling, shards, dtype)

    size = parsed.image_size
    (path / "preprocessor_config.json").write_text(json.dumps({
        "do_convert_rgb": None, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "image_processor_type": "SiglipImageProcessor",
        "image_seq_length": parsed.num_image_tokens, "processor_class": "PaliGemmaProcessor",
        "resample": 3, "rescale_factor": 1 / 255, "size": {"height": size, "width": size},
    }, indent=2))
    (path / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0, "transformers_version": "4.47.0.dev0"}, indent=2))
    return path


def _head_key(spelling: str) -> str:
    return "language_model.lm_head.weight" if spelling == "hub" else "lm_head.weight"


def _write_tensors(path: Path, weights: dict, spelling: str, shards: int, dtype: torch.dtype) -> None:
    head_weight = weights.pop("text.lm_head.weight", None)
    state = {hub_name(k, spelling): v.to(dtype) for k, v in weights.items()}
    if head_weight is not None:
        state[_head_key(spelling)] = head_weight.to(dtype)
    elif spelling != "hub":  # transformers' own saves may carry the tied head as a copy
        state[_head_key(spelling)] = state[hub_name("text.embed_tokens.weight", spelling)].clone()
    names = sorted(state)
    if shards > len(names):
        raise ValueError(f"{shards} shards for {len(names)} tensors")
    bounds = [round(i * len(names) / shards) for i in range(shards + 1)]  # every shard holds some tensors
    _save_shards(path, [{k: (lambda k=k: state[k]) for k in names[bounds[i]:bounds[i + 1]]} for i in range(shards)])


def _write_streamed(path: Path, shapes: dict, image_token_index: int, spelling: str, shards: int,
                    dtype: torch.dtype, seed: int) -> None:
    """A checkpoint too big to hold in float32: each shard's tensors are made, written and dropped in turn, the
    shards balanced by bytes."""
    def make(canonical: str, shape):
        return lambda: _stream_tensor(canonical, shape, seed, image_token_index, dtype)

    makers, sizes = {}, {}
    for canonical, shape in shapes.items():
        key = _head_key(spelling) if canonical == "text.lm_head.weight" else hub_name(canonical, spelling)
        makers[key], sizes[key] = make(canonical, shape), math.prod(shape)
    if spelling != "hub" and "text.lm_head.weight" not in shapes:
        makers[_head_key(spelling)] = makers[hub_name("text.embed_tokens.weight", spelling)]
        sizes[_head_key(spelling)] = sizes[hub_name("text.embed_tokens.weight", spelling)]
    names = sorted(makers)
    if shards > len(names):
        raise ValueError(f"{shards} shards for {len(names)} tensors")
    total, groups, done = sum(sizes.values()), [{} for _ in range(shards)], 0
    for k in names:  # in name order, as the Hub's shards are; a shard closes once its share of bytes is reached
        groups[min(shards - 1, done * shards // total)][k] = makers[k]
        done += sizes[k]
    _save_shards(path, [g for g in groups if g])


def _save_shards(path: Path, groups: list[dict]) -> None:
    """Write each group (name -> a function making the tensor) as one safetensors file, with the Hub's index when
    there is more than one."""
    from safetensors.torch import save_file

    if len(groups) == 1:
        save_file({k: make() for k, make in groups[0].items()}, str(path / "model.safetensors"),
                  metadata={"format": "pt"})
        return
    weight_map, total = {}, 0
    for i, group in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        part = {k: make() for k, make in group.items()}
        save_file(part, str(path / fname), metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in part.values())
        weight_map.update({k: fname for k in part})
        del part
    (path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
