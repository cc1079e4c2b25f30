"""PaliGemma 2 configuration, read from the Hub's `config.json`.

The Hub ships sparse configs: a key equal to the Gemma 2 / SigLIP default may be absent, so every default below is
the one `transformers` would fill in. Some fields are stale and ignored on purpose (top-level `hidden_size`,
`vision_config.num_positions`). Everything else is either used, checked against the one value we implement, or
known metadata; an unknown key is an error, because a field we do not understand may change the math and a model
that silently ignores it "loads" and then produces fluent garbage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

# Keys every transformers config may carry that say nothing about the math.
_METADATA_KEYS = {
    "_name_or_path", "architectures", "transformers_version", "torch_dtype", "dtype", "model_type",
    "id2label", "label2id", "problem_type", "return_dict", "output_attentions", "output_hidden_states",
    "chunk_size_feed_forward", "is_encoder_decoder", "initializer_range", "initializer_factor", "use_cache",
    "attention_dropout", "bos_token_id", "eos_token_id", "pad_token_id", "ignore_index", "_vocab_size",
    "max_position_embeddings", "num_image_tokens", "torchscript", "use_return_dict", "add_cross_attention",
    "tie_encoder_decoder", "cross_attention_hidden_size", "decoder_start_token_id", "sep_token_id",
    "prefix", "task_specific_params", "finetuning_task", "tokenizer_class", "pruned_heads",
    "use_bidirectional_attention",  # PaliGemma's prefix-LM mask is built explicitly, see model.py
}

# (default, rationale). A key that is absent takes its default, exactly as transformers fills it in.
_TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 256000,
    "hidden_size": 2304,
    "intermediate_size": 9216,
    "num_hidden_layers": 26,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "query_pre_attn_scalar": 256,
    "sliding_window": 4096,
    "attn_logit_softcapping": 50.0,
    "final_logit_softcapping": 30.0,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
}
_VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "patch_size": 14,
    "image_size": 224,
    "layer_norm_eps": 1e-6,
}


@dataclass(frozen=True)
class TextConfig:
    """The Gemma decoder. head_dim * num_heads need not equal hidden_size (it does not for the 27B).

    The defaults are Gemma 2's. For Gemma 1 (`family="gemma"`) the soft-caps, the window and
    query_pre_attn_scalar do not exist: they are None, and its decoder never reads them."""

    family: str = "gemma2"  # "gemma2" (PaliGemma 2) or "gemma" (PaliGemma 1): picks the decoder module
    vocab_size: int = 257216
    hidden_size: int = 2304
    intermediate_size: int = 9216
    num_hidden_layers: int = 26
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    head_dim: int = 256
    query_pre_attn_scalar: float | None = 256  # Gemma 2's attention scale is this ** -0.5, not head_dim ** -0.5
    sliding_window: int | None = 4096  # Gemma 2's even-indexed layers see only the last `sliding_window` keys
    attn_logit_softcapping: float | None = 50.0
    final_logit_softcapping: float | None = 30.0
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0

    def is_sliding(self, layer: int) -> bool:
        return layer % 2 == 0


@dataclass(frozen=True)
class VisionConfig:
    """SigLIP So400m/14 without its pooling head."""

    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_hidden_layers: int = 27
    num_attention_heads: int = 16
    patch_size: int = 14
    image_size: int = 224
    layer_norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class PaliGemmaConfig:
    text: TextConfig = field(default_factory=TextConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    image_token_index: int = 257152

    @property
    def num_image_tokens(self) -> int:
        return self.vision.num_patches

    @property
    def image_size(self) -> int:
        return self.vision.image_size

    @classmethod
    def from_json_file(cls, path: str | Path) -> "PaliGemmaConfig":
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path} is missing: a PaliGemma model folder needs its config.json") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path} is not valid JSON ({e}); download the model again") from None
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config.json") -> "PaliGemmaConfig":
        return _parse(raw, source)


# Presets of the released family, used by the model picker and by tests; each is what the Hub's sparse config
# for that size parses to.
PRESETS: dict[str, TextConfig] = {
    "3b": TextConfig(),
    "10b": TextConfig(hidden_size=3584, intermediate_size=14336, num_hidden_layers=42, num_attention_heads=16,
                      num_key_value_heads=8),
    "28b": TextConfig(hidden_size=4608, intermediate_size=36864, num_hidden_layers=46, num_attention_heads=32,
                      num_key_value_heads=16, head_dim=128, query_pre_attn_scalar=144),
}


def _parse(raw: dict[str, Any], source: str) -> PaliGemmaConfig:
    def fail(field_name: str, why: str) -> ConfigError:
        return ConfigError(f"{source}: field '{field_name}' {why}")

    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a JSON object")
    model_type = raw.get("model_type")
    if model_type != "paligemma":
        raise fail("model_type", f"is {model_type!r}; only PaliGemma 2 checkpoints (model_type 'paligemma') load here")

    top_used = {"text_config", "vision_config", "image_token_index", "projection_dim", "vocab_size",
                "tie_word_embeddings", "hidden_size"}  # hidden_size: stale leftover of PaliGemma 1, ignored
    _reject_unknown(raw, top_used, "", fail)
    if raw.get("tie_word_embeddings", True) is not True:
        raise fail("tie_word_embeddings", "is false; PaliGemma ties its output head to the embedding")

    text_raw = raw.get("text_config") or {}
    vision_raw = raw.get("vision_config") or {}
    if text_raw.get("model_type", "gemma2") != "gemma2":
        raise fail("text_config.model_type", f"is {text_raw.get('model_type')!r}: this is a PaliGemma 1 checkpoint; "
                                             "PaliGemma Desktop runs PaliGemma 2 (google/paligemma2-*)")
    if vision_raw.get("model_type", "siglip_vision_model") != "siglip_vision_model":
        raise fail("vision_config.model_type", f"is {vision_raw.get('model_type')!r}, expected 'siglip_vision_model'")

    text = _parse_text(text_raw, raw, fail)
    vision = _parse_vision(vision_raw, fail)

    projection_dim = raw.get("projection_dim", vision_raw.get("projection_dim", text.hidden_size))
    if projection_dim != text.hidden_size:
        raise fail("projection_dim", f"is {projection_dim} but text_config.hidden_size is {text.hidden_size}; "
                                     "the projector must map into the decoder's width")
    image_token_index = _as_int(raw.get("image_token_index", 257152), "image_token_index", fail)
    if not 0 <= image_token_index < text.vocab_size:
        raise fail("image_token_index", f"is {image_token_index}, outside the vocabulary of {text.vocab_size}")
    for key in ("num_image_tokens",):
        for where, sub in (("text_config", text_raw), ("vision_config", vision_raw)):
            if key in sub and sub[key] != vision.num_patches:
                raise fail(f"{where}.{key}", f"is {sub[key]} but image_size/patch_size give {vision.num_patches}")
    return PaliGemmaConfig(text=text, vision=vision, image_token_index=image_token_index)


def _parse_text(t: dict[str, Any], top: dict[str, Any], fail) -> TextConfig:
    used = set(_TEXT_DEFAULTS) | {"hidden_activation", "hidden_act", "attention_bias", "rope_scaling",
                                  "rope_parameters", "layer_types", "tie_word_embeddings"}
    _reject_unknown(t, used, "text_config.", fail)
    for key in ("hidden_activation", "hidden_act"):
        if t.get(key) not in (None, "gelu_pytorch_tanh"):
            raise fail(f"text_config.{key}", f"is {t[key]!r}; Gemma 2 uses 'gelu_pytorch_tanh'")
    if t.get("attention_bias", False):
        raise fail("text_config.attention_bias", "is true; Gemma 2 has no attention biases")
    if t.get("rope_scaling") is not None:
        raise fail("text_config.rope_scaling", "is set; PaliGemma 2 uses plain RoPE")
    rope_theta = t.get("rope_theta", _TEXT_DEFAULTS["rope_theta"])
    if (rp := t.get("rope_parameters")) is not None:
        if rp.get("rope_type", "default") != "default":
            raise fail("text_config.rope_parameters.rope_type", f"is {rp.get('rope_type')!r}; only 'default' RoPE")
        rope_theta = rp.get("rope_theta", rope_theta)

    values = {k: t.get(k, d) for k, d in _TEXT_DEFAULTS.items()}
    values["rope_theta"] = rope_theta
    # The sub-config's vocab_size is authoritative; old configs only had it at the top level.
    values["vocab_size"] = t.get("vocab_size", top.get("vocab_size", 257216))
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "sliding_window"):
        values[key] = _as_int(values[key], f"text_config.{key}", fail)
    cfg = TextConfig(**values)
    if cfg.num_attention_heads % cfg.num_key_value_heads:
        raise fail("text_config.num_key_value_heads", f"({cfg.num_key_value_heads}) must divide "
                                                      f"num_attention_heads ({cfg.num_attention_heads})")
    if cfg.head_dim % 2:
        raise fail("text_config.head_dim", f"is {cfg.head_dim}; rotary embeddings need an even head_dim")
    if (lt := t.get("layer_types")) is not None:
        expected = ["sliding_attention" if cfg.is_sliding(i) else "full_attention" for i in range(cfg.num_hidden_layers)]
        if list(lt) != expected:
            raise fail("text_config.layer_types", "is not Gemma 2's alternation (sliding on even layers)")
    for key in ("query_pre_attn_scalar", "rms_norm_eps", "rope_theta"):
        if not isinstance(getattr(cfg, key), (int, float)) or getattr(cfg, key) <= 0:
            raise fail(f"text_config.{key}", f"is {getattr(cfg, key)!r}; expected a positive number")
    return cfg


def _parse_vision(v: dict[str, Any], fail) -> VisionConfig:
    used = set(_VISION_DEFAULTS) | {"hidden_act", "num_channels", "vision_use_head", "num_positions",
                                    "projection_dim"}
    _reject_unknown(v, used, "vision_config.", fail)
    if v.get("hidden_act", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
        raise fail("vision_config.hidden_act", f"is {v['hidden_act']!r}; SigLIP uses 'gelu_pytorch_tanh'")
    if v.get("num_channels", 3) != 3:
        raise fail("vision_config.num_channels", "must be 3 (RGB)")
    if v.get("vision_use_head", False):
        raise fail("vision_config.vision_use_head", "is true; PaliGemma uses every patch, not a pooled head")
    values = {k: v.get(k, d) for k, d in _VISION_DEFAULTS.items()}
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size",
                "image_size"):
        values[key] = _as_int(values[key], f"vision_config.{key}", fail)
    cfg = VisionConfig(**values)
    if cfg.hidden_size % cfg.num_attention_heads:
        raise fail("vision_config.num_attention_heads", f"({cfg.num_attention_heads}) must divide hidden_size "
                                                        f"({cfg.hidden_size})")
    if cfg.image_size % cfg.patch_size:
        raise fail("vision_config.image_size", f"({cfg.image_size}) is not a multiple of patch_size ({cfg.patch_size})")
    return cfg


def _reject_unknown(d: dict[str, Any], used: set[str], prefix: str, fail) -> None:
    for key in d:
        if key not in used and key not in _METADATA_KEYS:
            raise fail(prefix + key, "is not a PaliGemma 2 setting this version understands; "
                                     "update PaliGemma Desktop or check the checkpoint")


def _as_int(value: Any, name: str, fail) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise fail(name, f"is {value!r}; expected a positive integer")
    return value
