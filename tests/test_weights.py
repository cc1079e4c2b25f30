"""Strict loading: every fault names the file and the key and says what to do; the loader never loads twice."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from vlm_core.runtime.engine import Engine
from vlm_core.errors import ConfigError, TokenizerError, WeightsError
from vlm_core.weights.loader import load_model


@pytest.fixture
def model_copy(toy_model_dir, tmp_path):
    dest = tmp_path / "model"
    shutil.copytree(toy_model_dir, dest)
    return dest


def _shard(folder, n=0):
    return sorted(folder.glob("model-*.safetensors"))[n]


def _rewrite_shard(path, edit):
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


def test_truncated_shard_names_the_shard(model_copy):
    shard = _shard(model_copy, 1)
    shard.write_bytes(shard.read_bytes()[:-1000])
    with pytest.raises(WeightsError, match=rf"{shard.name} is truncated.*download the model again"):
        load_model(model_copy)


def test_corrupt_header_names_the_shard(model_copy):
    shard = _shard(model_copy)
    data = bytearray(shard.read_bytes())
    data[8:20] = b"\xff" * 12
    shard.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=rf"{shard.name} has a corrupt header"):
        load_model(model_copy)


def test_empty_shard(model_copy):
    _shard(model_copy).write_bytes(b"")
    with pytest.raises(WeightsError, match="truncated"):
        load_model(model_copy)


def test_missing_tensor_is_named(model_copy):
    key = "language_model.model.layers.2.mlp.up_proj.weight"
    shard = next(p for p in model_copy.glob("model-*.safetensors") if key in load_file(str(p)))
    _rewrite_shard(shard, lambda t: t.pop(key))
    index = json.loads((model_copy / "model.safetensors.index.json").read_text())
    del index["weight_map"][key]
    (model_copy / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(WeightsError, match=r"no tensor for 'text\.layers\.2\.mlp\.up_proj\.weight'.*incomplete"):
        load_model(model_copy)


def _add_tensor(folder, key):
    """Add an extra tensor to the first shard and list it in the index, as a converter bug would."""
    shard = _shard(folder)
    _rewrite_shard(shard, lambda t: t.__setitem__(key, torch.zeros(2)))
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"][key] = shard.name
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return shard


def test_unexpected_tensor_names_file_and_key(model_copy):
    shard = _add_tensor(model_copy, "language_model.model.layers.0.mystery.weight")
    with pytest.raises(WeightsError, match=rf"{shard.name}: unexpected tensor 'language_model\.model\.layers\.0\.mystery"):
        load_model(model_copy)


def test_foreign_tensor_names_file_and_key(model_copy):
    _add_tensor(model_copy, "transformer.h.0.attn.weight")
    with pytest.raises(WeightsError, match=r"unexpected tensor 'transformer\.h\.0\.attn\.weight'.*not a PaliGemma "):
        load_model(model_copy)


def test_misshaped_tensor_names_key_and_shapes(model_copy):
    key = "multi_modal_projector.linear.weight"
    shard = next(p for p in model_copy.glob("model-*.safetensors") if key in load_file(str(p)))
    _rewrite_shard(shard, lambda t: t.__setitem__(key, torch.zeros(3, 3)))
    with pytest.raises(WeightsError, match=rf"{shard.name}: tensor '{key}' has shape \[3, 3\], config.json implies \[64, 48\]"):
        load_model(model_copy)


def test_shard_listed_in_index_but_missing(model_copy):
    _shard(model_copy, 1).unlink()
    with pytest.raises(WeightsError, match=r"model-00002-of-00002\.safetensors is missing"):
        load_model(model_copy)


def test_shards_without_index(model_copy):
    (model_copy / "model.safetensors.index.json").unlink()
    with pytest.raises(WeightsError, match="no model.safetensors.index.json"):
        load_model(model_copy)


def test_no_weights_at_all(model_copy):
    for p in model_copy.glob("model*"):
        p.unlink()
    with pytest.raises(WeightsError, match="holds no model weights"):
        load_model(model_copy)


def test_config_and_weights_that_do_not_belong_together(model_copy):
    cfg = json.loads((model_copy / "config.json").read_text())
    cfg["text_config"]["intermediate_size"] = 96
    (model_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match=r"mlp\.(gate|up|down)_proj\.weight' has shape"):
        load_model(model_copy)


def test_untied_config_without_a_head_names_the_missing_head(model_copy):
    cfg = json.loads((model_copy / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    (model_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match=r"no tensor for 'text\.lm_head\.weight'.*incomplete"):
        load_model(model_copy)


def test_missing_tokenizer_and_config(model_copy, tmp_path):
    (model_copy / "tokenizer.model").unlink()
    with pytest.raises(TokenizerError, match="tokenizer.model is missing"):
        Engine.load(model_copy, device="cpu")
    (model_copy / "tokenizer.model").write_bytes(b"garbage")
    with pytest.raises(TokenizerError, match="not a SentencePiece model"):
        Engine.load(model_copy, device="cpu")
    (model_copy / "config.json").unlink()
    with pytest.raises(ConfigError, match="config.json is missing"):
        Engine.load(model_copy, device="cpu")
    with pytest.raises(ConfigError, match="does not exist"):
        Engine.load(tmp_path / "nowhere", device="cpu")


def test_bf16_files_convert_to_float32_and_back(make_checkpoint, toy_model_dir):
    bf16_dir = make_checkpoint(dtype=torch.bfloat16)
    as_f32 = load_model(bf16_dir, dtype=torch.float32)
    as_bf16 = load_model(bf16_dir, dtype=torch.bfloat16)
    reference = load_model(toy_model_dir)
    for a, b, r in zip(as_f32.parameters(), as_bf16.parameters(), reference.parameters()):
        assert a.dtype == torch.float32 and b.dtype == torch.bfloat16
        assert torch.equal(a, r.to(torch.bfloat16).to(torch.float32))
        assert torch.equal(b, r.to(torch.bfloat16))
    assert not any(p.is_meta for p in as_f32.parameters())


# VmHWM, not ru_maxrss: a forked child's ru_maxrss starts at the parent's (pytest's) RSS.
_RSS_CHILD = r"""
import sys, torch
from vlm_core.cli.bench import _peak_rss_bytes, _rss_bytes
from vlm_core.weights.loader import load_model
before = _rss_bytes()
model = load_model(sys.argv[1], dtype=getattr(torch, sys.argv[2]))
peak = _peak_rss_bytes()
weights = sum(p.numel() * p.element_size() for p in model.parameters())
print((peak - before) / weights)
"""


@pytest.mark.parametrize("file_dtype, load_dtype, bound", [
    (torch.float32, "float32", 1.1),  # dtype kept: the model is never in memory twice
    (torch.bfloat16, "float32", 1.2),  # converting: only one tensor at a time exists twice
])
def test_peak_rss_while_loading(make_checkpoint, file_dtype, load_dtype, bound):
    from vlm_core.weights.toy import MEDIUM_TEXT, MEDIUM_VISION

    folder = make_checkpoint(text=MEDIUM_TEXT, vision=MEDIUM_VISION, dtype=file_dtype, shards=3)
    out = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(folder), load_dtype],
                         capture_output=True, text=True, check=True)
    ratio = float(out.stdout.strip())
    assert ratio <= bound, f"peak RSS during load was {ratio:.2f} x the weights"


@pytest.mark.parametrize("spelling,head", [("hub", "tied"), ("transformers4", "tied"), ("hub", "separate")])
def test_a_checkpoint_too_big_for_memory_is_written_one_shard_at_a_time(tmp_path, monkeypatch, spelling, head):
    """The 10B's random checkpoint (38 GB in float32) is made a shard at a time: here the toy takes that path, and
    it must load, give the same tensors on a second write, and keep the Hub's index and the tied-head copy."""
    from vlm_core.weights import toy

    monkeypatch.setattr(toy, "STREAM_ABOVE_BYTES", 0)
    a = toy.write_checkpoint(tmp_path / "a", spelling=spelling, shards=3, head=head, dtype=torch.bfloat16)
    b = toy.write_checkpoint(tmp_path / "b", spelling=spelling, shards=3, head=head, dtype=torch.bfloat16)
    index = json.loads((a / "model.safetensors.index.json").read_text())
    shards = sorted(a.glob("model-*.safetensors"))
    assert len(shards) == 3 and set(index["weight_map"].values()) == {s.name for s in shards}
    tensors = {k: v for s in shards for k, v in load_file(str(s)).items()}
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in tensors.values())
    again = {k: v for s in sorted(b.glob("model-*.safetensors")) for k, v in load_file(str(s)).items()}
    assert tensors.keys() == again.keys() and all(torch.equal(tensors[k], again[k]) for k in tensors)
    assert all(t.dtype == torch.bfloat16 for t in tensors.values())
    if spelling == "transformers4":  # transformers' own saves carry the tied head as a copy
        assert torch.equal(tensors["lm_head.weight"], tensors["model.language_model.embed_tokens.weight"])
    model = load_model(a, dtype=torch.float32)
    assert not model.text.embed_tokens.weight[model.cfg.image_token_index:].any()  # the Hub's zero rows past the tokenizer
