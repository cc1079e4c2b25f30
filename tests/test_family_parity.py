"""Every kind of released checkpoint, in its exact file layout, against transformers in float32.

The fixtures are the Hub's files at toy size (vlm_core.weights.toy): the converted PaliGemma 2 3B, 10B and 28B
(their config key sets, tensor names, bfloat16, shard counts), one at 448 px whose num_positions is stale, PaliGemma 1
(Gemma 1 decoder, multi-query attention), a PaliGemma 2 checkpoint re-saved by transformers 5 with the reference's
own save_pretrained, and fine-tunes whose head is not the embedding. The reference must load each with nothing
missing or unexpected (so the layout is really what transformers expects), and ours must produce the same greedy
tokens and the same logits.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from vlm_core.runtime.engine import Engine
from vlm_core.runtime.generate import SamplingParams

transformers = pytest.importorskip("transformers")

ATOL, RTOL = 2e-5, 1e-5
NEW_TOKENS = 16

KINDS = {
    "pg2-3b": dict(kind="paligemma2-3b"),
    "pg2-10b": dict(kind="paligemma2-10b"),
    "pg2-28b": dict(kind="paligemma2-28b"),
    "pg2-3b-448": dict(kind="paligemma2-3b", image_size=448),
    "pg1-3b": dict(kind="paligemma-3b"),
    "pg1-3b-448-t5": dict(kind="paligemma-3b", image_size=448, spelling="transformers5"),
    "pg2-3b-untied": dict(kind="paligemma2-3b", head="separate"),
    "pg1-3b-untied-t5": dict(kind="paligemma-3b", head="separate", spelling="transformers5", shards=1),
}


def _reference(folder):
    transformers.logging.set_verbosity_error()
    model, info = transformers.PaliGemmaForConditionalGeneration.from_pretrained(
        folder, attn_implementation="eager", dtype=torch.float32, output_loading_info=True)
    assert not any(info.values()), f"the reference did not load the fixture cleanly: {info}"
    return model.eval()


def _assert_parity(folder, photo, prompt="caption en"):
    ours = Engine.load(folder, device="cpu", dtype="float32")
    ref = _reference(folder)
    ids = torch.tensor([ours.prompt_ids(prompt)])
    pixels = ours.prepare_image(photo).pixels[None]
    with torch.inference_mode():
        greedy = ref.generate(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids),
                              token_type_ids=torch.zeros_like(ids), max_new_tokens=NEW_TOKENS, do_sample=False,
                              eos_token_id=None)[0, ids.shape[1]:].tolist()
        theirs = ref(input_ids=ids, pixel_values=pixels, token_type_ids=torch.zeros_like(ids)).logits
        mine = ours.model(ids, 0, ours.model.new_cache(ids.shape[1], ids.shape[1]),
                          ours.image_features(ours.prepare_image(photo)), all_logits=True)
    torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=RTOL)
    tokens = ours.generate(photo, prompt, SamplingParams(max_new_tokens=NEW_TOKENS, ignore_eos=True)).token_ids
    assert tokens == greedy
    assert len(set(tokens)) > 2  # the random weights make greedy decoding wander, so equality means something
    return ours, ref


@pytest.mark.parametrize("name", KINDS)
def test_each_kind_matches_transformers(make_checkpoint, photos, name):
    spec = KINDS[name]
    ours, ref = _assert_parity(make_checkpoint(**spec), photos[0])
    family = "paligemma" if spec["kind"].startswith("paligemma-") else "paligemma2"
    assert ours.cfg.family == family
    assert ref.config.text_config.model_type == ("gemma" if family == "paligemma" else "gemma2")
    separate = spec.get("head") == "separate"
    assert (ours.model.text.lm_head is not None) == separate
    if separate:
        torch.testing.assert_close(ours.model.text.lm_head.weight, ref.lm_head.weight, atol=0, rtol=0)
        assert not torch.equal(ref.lm_head.weight, ref.model.language_model.embed_tokens.weight)


@pytest.mark.parametrize("how, head", [("loaded", "tied"), ("fresh", "tied"), ("fresh", "separate")])
def test_checkpoint_re_saved_by_transformers_5(make_checkpoint, photos, tmp_path, how, head):
    """A fine-tune saved with the reference's own save_pretrained: its config carries layer_types, rope_parameters,
    dtype, tie_word_embeddings and the stale top-level hidden_size/vocab_size. A model loaded from the Hub's files
    writes their key names back; one built from the config writes transformers 5's own mix
    (`language_model.model.*` beside `vision_tower.encoder.*`)."""
    source = make_checkpoint(kind="paligemma2-28b", head=head)
    ref = _reference(source)
    if how == "fresh":
        fresh = transformers.PaliGemmaForConditionalGeneration(ref.config)
        fresh.load_state_dict(ref.state_dict())
        ref = fresh
    ref.save_pretrained(tmp_path)
    for name in ("tokenizer.model", "preprocessor_config.json"):
        shutil.copy(source / name, tmp_path / name)
    config = json.loads((tmp_path / "config.json").read_text())
    assert {"layer_types", "rope_parameters", "dtype"} <= set(config["text_config"]) and "hidden_size" in config
    keys = set().union(*(load_file(str(p)).keys() for p in tmp_path.glob("*.safetensors")))
    vision_prefix = "vision_tower.encoder." if how == "fresh" else "vision_tower.vision_model.encoder."
    assert any(k.startswith(vision_prefix) for k in keys)
    assert bool(keys & {"lm_head.weight", "language_model.lm_head.weight"}) == (head == "separate")
    ours, _ = _assert_parity(tmp_path, photos[1], "describe en")
    assert (ours.model.text.lm_head is not None) == (head == "separate")


def test_a_head_that_differs_from_the_embedding_is_used_although_the_config_ties_it(make_checkpoint, photos,
                                                                                     tmp_path):
    """transformers 5 keeps such a head (with a warning) rather than overwrite it; so do we."""
    folder = tmp_path / "model"
    shutil.copytree(make_checkpoint(kind="paligemma2-10b", spelling="transformers5", shards=1), folder)
    tensors = load_file(str(folder / "model.safetensors"))
    assert torch.equal(tensors["lm_head.weight"], tensors["model.language_model.embed_tokens.weight"])
    tensors["lm_head.weight"] = tensors["lm_head.weight"] + 0.05 * torch.randn_like(tensors["lm_head.weight"])
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    ours, _ = _assert_parity(folder, photos[2])
    assert ours.model.text.lm_head is not None
