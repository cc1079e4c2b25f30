"""config.json as the Hub ships it (sparse, with stale and foreign fields), read the way transformers reads it; and
every value that would change the math into something we do not compute, refused with the field's name."""

from __future__ import annotations

import json
import logging

import pytest

from vlm_core.errors import ConfigError
from vlm_core.model.config import PALIGEMMA1_3B, PRESETS, PaliGemmaConfig, TextConfig, VisionConfig
from vlm_core.weights.toy import HUB_KINDS, hub_config

HUB_3B_224 = hub_config("paligemma2-3b")


def _edit(cfg: dict, **changes) -> dict:
    """changes: text_config__hidden_size=..., or KeyError as the value to delete the key."""
    cfg = json.loads(json.dumps(cfg))
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = cfg
        for p in parents:
            node = node[p]
        if value is KeyError:
            node.pop(leaf)
        else:
            node[leaf] = value
    return cfg


def test_the_issue_3b_config_is_what_the_fixture_writes():
    # Byte for byte the published google/paligemma2-3b-pt-224/config.json (as given in issue 8).
    published = {
        "_vocab_size": 257152, "architectures": ["PaliGemmaForConditionalGeneration"], "bos_token_id": 2,
        "eos_token_id": 1, "image_token_index": 257152, "model_type": "paligemma", "num_hidden_layers": 26,
        "pad_token_id": 0, "projection_dim": 2304,
        "text_config": {"architectures": ["Gemma2ForCausalLM"], "attn_logit_softcapping": 50.0,
                        "cache_implementation": "hybrid", "eos_token_id": [1, 107], "final_logit_softcapping": 30.0,
                        "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
                        "hidden_size": 2304, "intermediate_size": 9216, "model_type": "gemma2",
                        "num_hidden_layers": 26, "num_image_tokens": 256, "num_key_value_heads": 4,
                        "query_pre_attn_scalar": 256, "sliding_window": 4096, "torch_dtype": "bfloat16",
                        "vocab_size": 257216},
        "torch_dtype": "bfloat16", "transformers_version": "4.47.0.dev0",
        "vision_config": {"hidden_size": 1152, "intermediate_size": 4304, "model_type": "siglip_vision_model",
                          "num_attention_heads": 16, "num_hidden_layers": 27, "num_image_tokens": 256,
                          "num_positions": 256, "patch_size": 14, "projection_dim": 2304, "torch_dtype": "bfloat16",
                          "vision_use_head": False}}
    assert json.dumps(HUB_3B_224, sort_keys=True) == json.dumps(published, sort_keys=True)


@pytest.mark.parametrize("kind, text", [("paligemma2-3b", PRESETS["3b"]), ("paligemma2-10b", PRESETS["10b"]),
                                        ("paligemma2-28b", PRESETS["28b"]), ("paligemma-3b", PALIGEMMA1_3B)])
@pytest.mark.parametrize("size", [224, 448, 896])
def test_every_released_config_parses_to_its_architecture(kind, text, size):
    for mix in (False, True):  # mix repos say "float32" inside the sub-configs
        cfg = PaliGemmaConfig.from_dict(hub_config(kind, size, mix))
        assert cfg.text == text
        assert cfg.vision == VisionConfig(image_size=size)  # num_positions (256 at every size) is ignored
        assert cfg.num_image_tokens == (size // 14) ** 2 and cfg.image_token_index == 257152
        assert cfg.family == ("paligemma" if kind.startswith("paligemma-") else "paligemma2")


def test_3b_defaults_fill_what_the_hub_leaves_out():
    cfg = PaliGemmaConfig.from_dict(HUB_3B_224)
    assert cfg.text == TextConfig() and cfg.text.num_attention_heads == 8 and cfg.text.head_dim == 256
    assert cfg.text.rope_theta == 10000.0 and cfg.text.rms_norm_eps == 1e-6 and cfg.text.tie_word_embeddings
    pg1 = PaliGemmaConfig.from_dict(hub_config("paligemma-3b")).text
    assert pg1.sliding_window is None and pg1.attn_logit_softcapping is None and pg1.query_pre_attn_scalar is None
    assert pg1.num_key_value_heads == 1 and pg1.head_dim == 256  # multi-query; GemmaConfig's head_dim default


def _reference_view(ref) -> dict:
    """What transformers' parsed config says about the math, in our field names."""
    t, v = ref.text_config, ref.vision_config
    view = {k: getattr(t, k) for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                       "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps")}
    view["rope_theta"] = t.rope_parameters["rope_theta"]
    for k in ("query_pre_attn_scalar", "sliding_window", "attn_logit_softcapping", "final_logit_softcapping"):
        view[k] = getattr(t, k, None)
    view["family"] = t.model_type
    view.update({f"vision.{k}": getattr(v, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                        "num_attention_heads", "patch_size", "image_size",
                                                        "layer_norm_eps")})
    view["image_token_index"] = ref.image_token_index
    view["tie_word_embeddings"] = ref.tie_word_embeddings
    return view


def _our_view(cfg: PaliGemmaConfig) -> dict:
    view = {k: getattr(cfg.text, k) for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                              "num_attention_heads", "num_key_value_heads", "head_dim",
                                              "rms_norm_eps", "rope_theta", "query_pre_attn_scalar", "sliding_window",
                                              "attn_logit_softcapping", "final_logit_softcapping", "family",
                                              "tie_word_embeddings")}
    view.update({f"vision.{k}": getattr(cfg.vision, k) for k in ("hidden_size", "intermediate_size",
                                                                 "num_hidden_layers", "num_attention_heads",
                                                                 "patch_size", "image_size", "layer_norm_eps")})
    view["image_token_index"] = cfg.image_token_index
    return view


SPARSE = [
    hub_config("paligemma2-3b"), hub_config("paligemma2-28b", 896), hub_config("paligemma-3b", 448),
    # Sparser than anything released: every absent field must take the reference's default.
    {"model_type": "paligemma", "projection_dim": 2304, "image_token_index": 1000,
     "text_config": {"model_type": "gemma2"}, "vision_config": {"hidden_size": 1152, "num_attention_heads": 16}},
    {"model_type": "paligemma", "image_token_index": 1000, "text_config": {"hidden_size": 2048},  # no model_type
     "vision_config": {}},
    {"model_type": "paligemma", "image_token_index": 1000},  # no sub-configs at all: PaliGemma 1 3B's
    _edit(hub_config("paligemma2-3b"), tie_word_embeddings=False),
]


@pytest.mark.parametrize("raw", SPARSE, ids=range(len(SPARSE)))
def test_defaults_are_the_references(raw):
    transformers = pytest.importorskip("transformers")
    ref = transformers.PaliGemmaConfig.from_dict(json.loads(json.dumps(raw)))
    assert _our_view(PaliGemmaConfig.from_dict(raw)) == _reference_view(ref)


@pytest.mark.parametrize("kind", HUB_KINDS)
def test_configs_re_saved_by_transformers_parse_the_same(tmp_path, kind):
    """transformers >= 4.56 / 5.x write dtype, layer_types, rope_parameters, use_bidirectional_attention,
    initializer_range, attention_bias, tie_word_embeddings and a stale top-level hidden_size/vocab_size."""
    transformers = pytest.importorskip("transformers")
    original = hub_config(kind, 448)
    (tmp_path / "config.json").write_text(json.dumps(original))
    transformers.PaliGemmaConfig.from_pretrained(tmp_path).save_pretrained(tmp_path / "resaved")
    resaved = json.loads((tmp_path / "resaved" / "config.json").read_text())
    if kind.startswith("paligemma2"):
        assert {"layer_types", "rope_parameters", "dtype", "attention_bias"} <= set(resaved["text_config"])
        assert resaved["hidden_size"] == 2048 and resaved["vocab_size"] == 257152  # stale
    resaved["_name_or_path"] = "someone/paligemma-finetune"  # fine-tunes carry it
    assert PaliGemmaConfig.from_dict(resaved) == PaliGemmaConfig.from_dict(original)


def test_unknown_keys_are_ignored_and_logged_once(caplog):
    raw = _edit(HUB_3B_224, text_config__some_new_knob_8=3, vision_config__another_knob_8="x", shiny_new_top_8=1)
    with caplog.at_level(logging.DEBUG, logger="vlm_core.model.config"):
        assert PaliGemmaConfig.from_dict(raw) == PaliGemmaConfig.from_dict(HUB_3B_224)
        PaliGemmaConfig.from_dict(raw)
    lines = [r for r in caplog.records if "some_new_knob_8" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.DEBUG
    assert all(k in lines[0].getMessage() for k in ("text_config.some_new_knob_8", "vision_config.another_knob_8",
                                                    "shiny_new_top_8"))
    assert "cache_implementation" not in caplog.text  # known metadata is not noise


def test_tolerated_spellings():
    assert PaliGemmaConfig.from_dict(_edit(HUB_3B_224, text_config__final_logit_softcapping=None)).text \
        .final_logit_softcapping is None
    legacy = _edit(hub_config("paligemma-3b"), text_config__hidden_act="gelu")  # transformers maps it to tanh
    assert PaliGemmaConfig.from_dict(legacy).text == PALIGEMMA1_3B
    default_rope = _edit(HUB_3B_224, text_config__rope_scaling={"rope_type": "default"},
                         text_config__rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    assert PaliGemmaConfig.from_dict(default_rope).text == TextConfig()
    # Gemma 2's MLP reads hidden_activation; the converter's second spelling is ignored, as the reference does.
    assert PaliGemmaConfig.from_dict(_edit(HUB_3B_224, text_config__hidden_act="gelu")).text == TextConfig()


@pytest.mark.parametrize("where", ["tie_word_embeddings", "text_config__tie_word_embeddings"])
def test_untied_head_is_a_setting_not_an_error(where):
    cfg = PaliGemmaConfig.from_dict(_edit(HUB_3B_224, **{where: False}))
    assert cfg.text.tie_word_embeddings is False


@pytest.mark.parametrize("base, changes, field", [
    (HUB_3B_224, {"text_config__model_type": "gemma3_text"}, "text_config.model_type"),
    (HUB_3B_224, {"model_type": "llava"}, "model_type"),
    (HUB_3B_224, {"vision_config__model_type": "clip_vision_model"}, "vision_config.model_type"),
    (HUB_3B_224, {"text_config__rope_scaling": {"type": "linear", "factor": 2.0}}, "text_config.rope_scaling"),
    (HUB_3B_224, {"text_config__rope_parameters": {"rope_type": "yarn", "factor": 2.0}},
     "text_config.rope_parameters.rope_type"),
    (HUB_3B_224, {"text_config__rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.5}},
     "text_config.rope_parameters.partial_rotary_factor"),
    (HUB_3B_224, {"text_config__attention_bias": True}, "text_config.attention_bias"),
    (HUB_3B_224, {"text_config__hidden_activation": "relu"}, "text_config.hidden_activation"),
    (hub_config("paligemma-3b"), {"text_config__hidden_act": "silu"}, "text_config.hidden_act"),
    (HUB_3B_224, {"vision_config__hidden_act": "quick_gelu"}, "vision_config.hidden_act"),
    (HUB_3B_224, {"vision_config__vision_use_head": True}, "vision_config.vision_use_head"),
    (HUB_3B_224, {"text_config__layer_types": ["full_attention"] * 26}, "text_config.layer_types"),
    (HUB_3B_224, {"projection_dim": 2048}, "projection_dim"),
    (HUB_3B_224, {"text_config__num_key_value_heads": 3}, "text_config.num_key_value_heads"),
    (HUB_3B_224, {"text_config__head_dim": 255}, "text_config.head_dim"),
    (HUB_3B_224, {"text_config__num_image_tokens": 1024}, "text_config.num_image_tokens"),
    (HUB_3B_224, {"vision_config__image_size": 230}, "vision_config.image_size"),
    (HUB_3B_224, {"vision_config__num_attention_heads": 7}, "vision_config.num_attention_heads"),
    (HUB_3B_224, {"text_config__hidden_size": "2304"}, "text_config.hidden_size"),
    (HUB_3B_224, {"text_config__sliding_window": 0}, "text_config.sliding_window"),
    (HUB_3B_224, {"text_config__query_pre_attn_scalar": -1}, "text_config.query_pre_attn_scalar"),
    (HUB_3B_224, {"image_token_index": 300000}, "image_token_index"),
    (HUB_3B_224, {"text_config": [1, 2]}, "text_config"),
])
def test_math_changing_values_name_the_field(base, changes, field):
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        PaliGemmaConfig.from_dict(_edit(base, **changes))


def test_unreadable_config_file(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        PaliGemmaConfig.from_json_file(tmp_path / "config.json")
