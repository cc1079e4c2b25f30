"""`python -m vlm_core info`: the released configs, full size, written out as files, read without any weights."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from vlm_core.cli import main
from vlm_core.model.config import PaliGemmaConfig
from vlm_core.model.params import parameter_count, tensor_shapes
from vlm_core.weights.toy import hub_config

# Parameters of each release: keras-hub's published preset counts plus 64 x hidden_size, because the Hub's
# checkpoints pad the embedding from keras' 257152 rows to 257216 (e.g. 3B at 224: 3,032,094,960 + 64 * 2304).
# Only the position table grows with the resolution.
TABLE = [
    ("paligemma2-3b", 224, 3_032_242_416), ("paligemma2-3b", 448, 3_033_127_152), ("paligemma2-3b", 896, 3_036_666_096),
    ("paligemma2-10b", 224, 9_662_638_832), ("paligemma2-10b", 448, 9_663_523_568),
    ("paligemma2-10b", 896, 9_667_062_512),
    ("paligemma2-28b", 224, 27_650_487_024), ("paligemma2-28b", 448, 27_651_371_760),
    ("paligemma2-28b", 896, 27_654_910_704),
    ("paligemma-3b", 224, 2_923_466_480), ("paligemma-3b", 448, 2_924_351_216), ("paligemma-3b", 896, 2_927_890_160),
]
TEXT = {
    "paligemma2-3b": dict(hidden_size=2304, num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
                          head_dim=256, query_pre_attn_scalar=256, sliding_window=4096, attn_logit_softcapping=50.0,
                          final_logit_softcapping=30.0, vocab_size=257216),
    "paligemma2-10b": dict(hidden_size=3584, num_hidden_layers=42, num_attention_heads=16, num_key_value_heads=8,
                           head_dim=256, query_pre_attn_scalar=256, sliding_window=4096, attn_logit_softcapping=50.0,
                           final_logit_softcapping=30.0, vocab_size=257216),
    "paligemma2-28b": dict(hidden_size=4608, num_hidden_layers=46, num_attention_heads=32, num_key_value_heads=16,
                           head_dim=128, query_pre_attn_scalar=144, sliding_window=4096, attn_logit_softcapping=50.0,
                           final_logit_softcapping=30.0, vocab_size=257216),
    "paligemma-3b": dict(hidden_size=2048, num_hidden_layers=18, num_attention_heads=8, num_key_value_heads=1,
                         head_dim=256, query_pre_attn_scalar=None, sliding_window=None, attn_logit_softcapping=None,
                         final_logit_softcapping=None, vocab_size=257216),
}


def _info(capsys, folder, *extra) -> dict:
    assert main(["info", "--model", str(folder), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("kind, size, parameters", TABLE)
def test_full_size_configs_give_architecture_and_parameter_count(tmp_path, capsys, kind, size, parameters):
    (tmp_path / "config.json").write_text(json.dumps(hub_config(kind, size, mix=size != 896)))
    info = _info(capsys, tmp_path)
    assert info["family"] == ("paligemma" if kind == "paligemma-3b" else "paligemma2")
    assert info["image_size"] == size and info["num_image_tokens"] == (size // 14) ** 2
    assert info["parameters"] == parameters
    assert info["text"] == TEXT[kind]
    assert info["head"] == "tied"
    assert info["weight_bytes"] == {"float32": 4 * parameters, "bfloat16": 2 * parameters, "float16": 2 * parameters}
    assert info["files"]["present"] == [] and not info["files"]["complete"]


@pytest.mark.parametrize("kind, size", [(k, s) for k, s, _ in TABLE if s == 448] + [("paligemma2-3b", 224)])
def test_arithmetic_equals_the_model_built_on_the_meta_device(kind, size):
    torch = pytest.importorskip("torch")
    from vlm_core.model.paligemma import PaliGemma
    from vlm_core.weights.loader import checkpoint_shapes

    for tied in (True, False):
        raw = hub_config(kind, size)
        raw["tie_word_embeddings"] = tied
        cfg = PaliGemmaConfig.from_dict(raw)
        with torch.device("meta"):
            model = PaliGemma(cfg)
        assert parameter_count(cfg) == sum(p.numel() for p in model.parameters())
        assert tensor_shapes(cfg) == checkpoint_shapes(model)  # the names the toy writer and the loader agree on


def test_text_output_names_every_setting_and_none_where_gemma_1_has_none(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(hub_config("paligemma-3b", 448)))
    assert main(["info", "--model", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "paligemma (SigLIP vision tower, linear projector, Gemma 1 decoder)" in out
    assert "2,924,351,216 (2.92 B)" in out and "448 x 448 px, 1024 image tokens" in out
    assert "sliding_window           none" in out and "num_key_value_heads      1" in out
    assert "float32 10.9 GiB · bfloat16 5.4 GiB · float16 5.4 GiB" in out
    assert "no weight files" in out and "tokenizer.model    missing" in out


def test_weight_files_present_missing_and_the_head(make_checkpoint, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(make_checkpoint(kind="paligemma2-10b"), folder)
    info = _info(capsys, folder)
    assert info["files"]["complete"] and len(info["files"]["present"]) == 1 + 4  # the index and 4 shards
    assert info["head"] == "tied" and info["head_detail"] == "tied to the token embedding"
    (folder / "model-00003-of-00004.safetensors").unlink()
    info = _info(capsys, folder)
    assert info["files"]["missing"] == ["model-00003-of-00004.safetensors"] and not info["files"]["complete"]
    assert "weights not read" in info["head_detail"]

    copy = _info(capsys, make_checkpoint(kind="paligemma2-10b", spelling="transformers5", shards=1))
    assert copy["head"] == "tied" and "'lm_head.weight' in the checkpoint is a copy" in copy["head_detail"]
    separate = _info(capsys, make_checkpoint(kind="paligemma-3b", head="separate"))
    tied = _info(capsys, make_checkpoint(kind="paligemma-3b"))
    assert separate["head"] == "separate" and "language_model.lm_head.weight" in separate["head_detail"]
    d, v = separate["text"]["hidden_size"], separate["text"]["vocab_size"]
    assert separate["parameters"] == tied["parameters"] + v * d  # a separate head counts; a tied one once


def test_info_never_imports_torch_and_fails_cleanly(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(hub_config("paligemma2-28b", 896)))
    probe = ("import sys; from vlm_core.cli import main; rc = main(['info', '--model', sys.argv[1]]); "
             "print('torch' in sys.modules); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip().endswith("False"), out.stderr
    (tmp_path / "config.json").unlink()
    bad = subprocess.run([sys.executable, "-m", "vlm_core", "info", "--model", str(tmp_path)], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and "config.json is missing" in bad.stderr
