"""PaliGemma 1 and 2 configuration, read from the Hub's `config.json` the way the reference reads it.

The Hub ships sparse configs, full of fields that say nothing about the math: the converter writes a top-level
`num_hidden_layers` "for generate", copies `cache_implementation`, `architectures` and an `eos_token_id` list from
Gemma 2's chat config, and leaves stale values behind (top-level `hidden_size` and `vocab_size`,
`vision_config.num_positions`, which stays at the 224 px value in 448/896 px checkpoints). Transformers ignores all
of them, and so do we: an unknown key is ignored and its name logged once, at debug level.

What is *not* tolerated is a value that changes the math into something this implementation does not compute:
RoPE scaling, attention biases, another activation, SigLIP's pooling head, a `layer_types` other than Gemma 2's
alternation, or sizes that contradict each other. Each is a ConfigError naming the field, because a model that
silently ignores such a field "loads" and then produces fluent garbage.

A key that is absent takes the default of the transformers config class that would parse it (Gemma2Config,
GemmaConfig, SiglipVisionConfig, PaliGemmaConfig), so a sparse config means here what it means there.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

_log = logging.getLogger(__name__)

# text_config.model_type -> the name of the model family it makes.
FAMILIES = {"gemma2": "paligemma2", "gemma": "paligemma"}

# Keys that are known to say nothing about the math: ignored without a log line.
_METADATA_KEYS = {
    "_name_or_path", "architectures", "transformers_version", "torch_dtype", "dtype", "model_type",
    "id2label", "label2id", "problem_type", "return_dict", "output_attentions", "output_hidden_states",
    "chunk_size_feed_forward", "is_encoder_decoder", "initializer_range", "initializer_factor", "use_cache",
    "attention_dropout", "bos_token_id", "eos_token_id", "pad_token_id", "ignore_index", "_vocab_size",
    "max_position_embeddings", "num_image_tokens", "torchscript", "use_return_dict", "add_cross_attention",
    "tie_encoder_decoder", "cross_attention_hidden_size", "decoder_start_token_id", "sep_token_id",
    "prefix", "task_specific_params", "finetuning_task", "tokenizer_class", "pruned_heads",
    "cache_implementation",  # a generate() setting copied from Gemma 2's chat config
    "use_bidirectional_attention",  # PaliGemma's prefix-LM mask is built explicitly, see gemma.prefix_lm_mask
}
# Stale or derived top-level fields the converter writes; the sub-configs are authoritative.
_TOP_IGNORED = {"hidden_size", "vocab_size", "num_hidden_layers"}

# The defaults of transformers' config classes, for the fields that shape the math. A sub-config present in the file
# is filled in from its class's defaults; one absent altogether from PaliGemmaConfig's (PaliGemma 1 3B's).
_TEXT_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma2": {
        "vocab_size": 256000, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "query_pre_attn_scalar": 256,
        "sliding_window": 4096, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
    },
    "gemma": {
        "vocab_size": 256000, "hidden_size": 3072, "intermediate_size": 24576, "num_hidden_layers": 28,
        "num_attention_heads": 16, "num_key_value_heads": 16, "head_dim": 256, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
    },
}
_VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
    "patch_size": 16, "image_size": 224, "layer_norm_eps": 1e-6,
}
_ABSENT_TEXT = {"model_type": "gemma", "hidden_size": 2048, "num_hidden_layers": 18, "intermediate_size": 16384,
                "num_attention_heads": 8, "num_key_value_heads": 1, "vocab_size": 257152}
_ABSENT_VISION = {"intermediate_size": 4096, "hidden_size": 1152, "patch_size": 14, "image_size": 224,
                  "num_hidden_layers": 27, "num_attention_heads": 16, "vision_use_head": False}
_TOP_DEFAULTS = {"image_token_index": 256000, "projection_dim": 2048}

_GELU_TANH = "gelu_pytorch_tanh"
_logged_unknown: set[str] = set()


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
    tie_word_embeddings: bool = True  # False: the output head is a parameter of its own (text.lm_head)

    def is_sliding(self, layer: int) -> bool:
        return self.sliding_window is not None and layer % 2 == 0


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
    def family(self) -> str:
        """"paligemma2" or "paligemma" (PaliGemma 1)."""
        return FAMILIES[self.text.family]

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
# PaliGemma 1 came in one size: Gemma 2B with multi-query attention.
PALIGEMMA1_3B = TextConfig(family="gemma", hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
                           num_attention_heads=8, num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=None,
                           sliding_window=None, attn_logit_softcapping=None, final_logit_softcapping=None)


def _parse(raw: dict[str, Any], source: str) -> PaliGemmaConfig:
    def fail(field_name: str, why: str) -> ConfigError:
        return ConfigError(f"{source}: field '{field_name}' {why}")

    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a JSON object")
    model_type = raw.get("model_type")
    if model_type != "paligemma":
        raise fail("model_type", f"is {model_type!r}; only PaliGemma checkpoints (model_type 'paligemma': "
                                 "google/paligemma-* and google/paligemma2-*) load here")
    unknown: list[str] = []
    _note_unknown(raw, {"text_config", "vision_config", "image_token_index", "projection_dim",
                        "tie_word_embeddings"} | _TOP_IGNORED, "", unknown)

    text_raw = raw.get("text_config")
    vision_raw = raw.get("vision_config")
    text_raw = dict(_ABSENT_TEXT) if text_raw is None else text_raw
    vision_raw = dict(_ABSENT_VISION) if vision_raw is None else vision_raw
    for name, sub in (("text_config", text_raw), ("vision_config", vision_raw)):
        if not isinstance(sub, dict):
            raise fail(name, "is not a JSON object")
    family = text_raw.get("model_type", "gemma")  # PaliGemmaConfig's default sub-config type
    if family not in _TEXT_DEFAULTS:
        raise fail("text_config.model_type", f"is {family!r}; PaliGemma's decoder is 'gemma2' (PaliGemma 2) or "
                                             "'gemma' (PaliGemma 1)")
    if vision_raw.get("model_type", "siglip_vision_model") != "siglip_vision_model":
        raise fail("vision_config.model_type", f"is {vision_raw.get('model_type')!r}, expected 'siglip_vision_model'")

    text = _parse_text(text_raw, family, raw.get("tie_word_embeddings", True), fail, unknown)
    vision = _parse_vision(vision_raw, fail, unknown)

    projection_dim = _as_int(raw.get("projection_dim", _TOP_DEFAULTS["projection_dim"]), "projection_dim", fail)
    if projection_dim != text.hidden_size:
        raise fail("projection_dim", f"is {projection_dim} but text_config.hidden_size is {text.hidden_size}; "
                                     "the projector must map into the decoder's width")
    image_token_index = _as_int(raw.get("image_token_index", _TOP_DEFAULTS["image_token_index"]),
                                "image_token_index", fail)
    if not 0 <= image_token_index < text.vocab_size:
        raise fail("image_token_index", f"is {image_token_index}, outside the vocabulary of {text.vocab_size}")
    for where, sub in (("text_config", text_raw), ("vision_config", vision_raw)):
        if "num_image_tokens" in sub and sub["num_image_tokens"] != vision.num_patches:
            raise fail(f"{where}.num_image_tokens", f"is {sub['num_image_tokens']} but image_size/patch_size give "
                                                    f"{vision.num_patches}")
    if new := [k for k in unknown if k not in _logged_unknown]:
        _logged_unknown.update(new)
        _log.debug("%s: ignoring keys that do not change the model: %s", source, ", ".join(new))
    return PaliGemmaConfig(text=text, vision=vision, image_token_index=image_token_index)


def _parse_text(t: dict[str, Any], family: str, top_tie: Any, fail, unknown: list[str]) -> TextConfig:
    defaults = _TEXT_DEFAULTS[family]
    checked = {"hidden_activation", "hidden_act", "attention_bias", "rope_scaling", "rope_parameters",
               "tie_word_embeddings"} | ({"layer_types"} if family == "gemma2" else set())
    _note_unknown(t, set(defaults) | checked, "text_config.", unknown)

    # The activation the reference's MLP reads: Gemma 2's `hidden_activation`; Gemma 1's `hidden_act` (whose legacy
    # value "gelu" transformers maps to the tanh approximation), or `hidden_activation` where transformers 4.4x
    # preferred it. The other spelling is ignored by the reference, and by us.
    spellings = ("hidden_activation",) if family == "gemma2" else ("hidden_act", "hidden_activation")
    for key in spellings:
        allowed = (None, _GELU_TANH, "gelu") if key == "hidden_act" else (None, _GELU_TANH)
        if t.get(key) not in allowed:
            raise fail(f"text_config.{key}", f"is {t[key]!r}; Gemma uses {_GELU_TANH!r}")
    if t.get("attention_bias", False) is not False:
        raise fail("text_config.attention_bias", "is true; Gemma has no attention biases")
    rope_theta = t.get("rope_theta", defaults["rope_theta"])
    if (rs := t.get("rope_scaling")) is not None:
        if not isinstance(rs, dict) or rs.get("rope_type", rs.get("type")) != "default":
            raise fail("text_config.rope_scaling", f"is {rs!r}; PaliGemma uses plain RoPE")
    if (rp := t.get("rope_parameters")) is not None:
        if not isinstance(rp, dict):
            raise fail("text_config.rope_parameters", f"is {rp!r}; expected an object")
        if rp.get("rope_type", "default") != "default":
            raise fail("text_config.rope_parameters.rope_type", f"is {rp.get('rope_type')!r}; only 'default' RoPE")
        if rp.get("partial_rotary_factor", 1.0) != 1.0:
            raise fail("text_config.rope_parameters.partial_rotary_factor", "is set; Gemma rotates every dimension")
        rope_theta = rp.get("rope_theta", rope_theta)

    values = {k: t.get(k, d) for k, d in defaults.items()}
    values["rope_theta"] = rope_theta
    ints = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim"] + (["sliding_window"] if family == "gemma2" else [])
    for key in ints:
        values[key] = _as_int(values[key], f"text_config.{key}", fail)
    if family == "gemma":
        values.update(query_pre_attn_scalar=None, sliding_window=None, attn_logit_softcapping=None,
                      final_logit_softcapping=None)
    # PaliGemma ties the head to the embedding unless either level of the config says otherwise (transformers 5
    # reads the top level, 4.x the text config's).
    tie = top_tie is not False and t.get("tie_word_embeddings", True) is not False
    cfg = TextConfig(family=family, tie_word_embeddings=tie, **values)

    if cfg.num_attention_heads % cfg.num_key_value_heads:
        raise fail("text_config.num_key_value_heads", f"({cfg.num_key_value_heads}) must divide "
                                                      f"num_attention_heads ({cfg.num_attention_heads})")
    if cfg.head_dim % 2:
        raise fail("text_config.head_dim", f"is {cfg.head_dim}; rotary embeddings need an even head_dim")
    if family == "gemma2" and (lt := t.get("layer_types")) is not None:
        expected = ["sliding_attention" if cfg.is_sliding(i) else "full_attention"
                    for i in range(cfg.num_hidden_layers)]
        if list(lt) != expected:
            raise fail("text_config.layer_types", "is not Gemma 2's alternation (sliding on even layers)")
    positive = ["rms_norm_eps", "rope_theta"] + (["query_pre_attn_scalar"] if family == "gemma2" else [])
    for key in positive:
        value = getattr(cfg, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise fail(f"text_config.{key}", f"is {value!r}; expected a positive number")
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        value = getattr(cfg, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise fail(f"text_config.{key}", f"is {value!r}; expected a positive number or null")
    return cfg


def _parse_vision(v: dict[str, Any], fail, unknown: list[str]) -> VisionConfig:
    checked = {"hidden_act", "num_channels", "vision_use_head"}
    ignored = {"num_positions",  # stale at 448/896 px; the position table follows image_size
               "projection_dim",  # overwritten by the top-level one, as in the reference
               "projector_hidden_act"}  # PaliGemma 1 metadata: its projector is linear
    _note_unknown(v, set(_VISION_DEFAULTS) | checked | ignored, "vision_config.", unknown)
    if v.get("hidden_act", _GELU_TANH) != _GELU_TANH:
        raise fail("vision_config.hidden_act", f"is {v['hidden_act']!r}; SigLIP uses {_GELU_TANH!r}")
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


def _note_unknown(d: dict[str, Any], used: set[str], prefix: str, unknown: list[str]) -> None:
    unknown.extend(prefix + key for key in d if key not in used and key not in _METADATA_KEYS)


def _as_int(value: Any, name: str, fail) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise fail(name, f"is {value!r}; expected a positive integer")
    return value
