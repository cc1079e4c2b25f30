"""config.json as the Hub ships it: sparse, with stale fields; and every way it can be wrong."""

from __future__ import annotations

import json

import pytest

from vlm_core.model.config import PRESETS, PaliGemmaConfig, TextConfig, VisionConfig
from vlm_core.errors import ConfigError

# google/paligemma2-3b-pt-224's config.json, as published (sparse: Gemma 2 and SigLIP defaults left out).
HUB_3B_224 = {
    "_vocab_size": 257152, "architectures": ["PaliGemmaForConditionalGeneration"], "bos_token_id": 2,
    "eos_token_id": 1, "hidden_size": 2048, "image_token_index": 257152, "model_type": "paligemma",
    "pad_token_id": 0, "projection_dim": 2304,
    "text_config": {"hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2304, "intermediate_size": 9216,
                    "model_type": "gemma2", "num_attention_heads": 8, "num_hidden_layers": 26,
                    "num_image_tokens": 256, "num_key_value_heads": 4, "query_pre_attn_scalar": 256,
                    "sliding_window": 4096, "torch_dtype": "bfloat16", "vocab_size": 257216},
    "torch_dtype": "bfloat16", "transformers_version": "4.47.0.dev0",
    "vision_config": {"hidden_size": 1152, "image_size": 224, "intermediate_size": 4304,
                      "model_type": "siglip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 27,
                      "num_image_tokens": 256, "num_positions": 256, "patch_size": 14, "projection_dim": 2304,
                      "torch_dtype": "bfloat16", "vision_use_head": False},
}


def _hub(**changes):
    cfg = json.loads(json.dumps(HUB_3B_224))
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


def test_hub_3b_config_parses_with_gemma2_defaults():
    cfg = PaliGemmaConfig.from_dict(HUB_3B_224)
    assert cfg.text == TextConfig() == PRESETS["3b"]
    assert cfg.text.attn_logit_softcapping == 50.0 and cfg.text.final_logit_softcapping == 30.0
    assert cfg.text.head_dim == 256 and cfg.text.rope_theta == 10000.0 and cfg.text.rms_norm_eps == 1e-6
    assert cfg.vision == VisionConfig()
    assert cfg.image_token_index == 257152 and cfg.num_image_tokens == 256


def test_28b_keeps_head_dim_and_scalar_apart():
    cfg = PaliGemmaConfig.from_dict(_hub(text_config__hidden_size=4608, text_config__intermediate_size=36864,
                                         text_config__num_hidden_layers=46, text_config__num_attention_heads=32,
                                         text_config__num_key_value_heads=16, text_config__head_dim=128,
                                         text_config__query_pre_attn_scalar=144, projection_dim=4608,
                                         vision_config__projection_dim=4608))
    assert cfg.text == PRESETS["28b"]
    assert cfg.text.head_dim * cfg.text.num_attention_heads != cfg.text.hidden_size


def test_896_pixels_means_4096_image_tokens():
    cfg = PaliGemmaConfig.from_dict(_hub(vision_config__image_size=896, vision_config__num_image_tokens=4096,
                                         text_config__num_image_tokens=4096))
    assert cfg.num_image_tokens == 4096


def test_explicit_null_final_softcap_means_none():
    assert PaliGemmaConfig.from_dict(_hub(text_config__final_logit_softcapping=None)).text.final_logit_softcapping is None


def test_transformers_own_saved_config_parses_the_same(tmp_path):
    transformers = pytest.importorskip("transformers")
    (tmp_path / "config.json").write_text(json.dumps(HUB_3B_224))
    ref = transformers.PaliGemmaConfig.from_pretrained(tmp_path)
    ref.save_pretrained(tmp_path / "resaved")  # transformers 5 writes layer_types, rope_parameters, ...
    assert PaliGemmaConfig.from_json_file(tmp_path / "resaved" / "config.json") == PaliGemmaConfig.from_dict(HUB_3B_224)


@pytest.mark.parametrize("changes, field", [
    ({"text_config__model_type": "gemma"}, "text_config.model_type"),
    ({"model_type": "llava"}, "model_type"),
    ({"text_config__rope_scaling": {"type": "linear", "factor": 2.0}}, "text_config.rope_scaling"),
    ({"text_config__some_new_knob": 3}, "text_config.some_new_knob"),
    ({"vision_config__vision_use_head": True}, "vision_config.vision_use_head"),
    ({"projection_dim": 2048}, "projection_dim"),
    ({"text_config__num_key_value_heads": 3}, "text_config.num_key_value_heads"),
    ({"text_config__num_image_tokens": 1024}, "text_config.num_image_tokens"),
    ({"vision_config__image_size": 230}, "vision_config.image_size"),
    ({"text_config__hidden_size": "2304"}, "text_config.hidden_size"),
    ({"image_token_index": 300000}, "image_token_index"),
    ({"text_config__hidden_activation": "relu"}, "text_config.hidden_activation"),
    ({"tie_word_embeddings": False}, "tie_word_embeddings"),
])
def test_bad_configs_name_the_field(changes, field):
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        PaliGemmaConfig.from_dict(_hub(**changes))


def test_unreadable_config_file(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        PaliGemmaConfig.from_json_file(tmp_path / "config.json")
