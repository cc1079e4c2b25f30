"""Numerical parity with transformers' PaliGemmaForConditionalGeneration on the same files.

The reference loads the toy checkpoint with from_pretrained, exactly as it would load google/paligemma2-*, so these
tests also prove that our reading of the sparse config and the legacy key names matches the reference's. The toy
has every feature on: GQA, head_dim*heads != hidden, query_pre_attn_scalar != head_dim, a sliding window (8)
shorter than the prefix (21 tokens) and the output, and soft-caps small enough to change the result.
"""

from __future__ import annotations

import pytest
import torch

from vlm_core.runtime.engine import Engine
from vlm_core.runtime.generate import SamplingParams, TokenEvent

transformers = pytest.importorskip("transformers")

ATOL, RTOL = 2e-5, 1e-5  # float32; observed max |diff| is about 1e-6 on the logits


@pytest.fixture(scope="module")
def engine(toy_model_dir):
    return Engine.load(toy_model_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def reference(toy_model_dir):
    transformers.logging.set_verbosity_error()
    model = transformers.PaliGemmaForConditionalGeneration.from_pretrained(
        toy_model_dir, attn_implementation="eager", dtype=torch.float32)
    return model.eval()


def _reference_inputs(engine, image, prompt):
    prepared = engine.prepare_image(image)
    ids = torch.tensor([engine.prompt_ids(prompt)])
    return ids, prepared.pixels[None]


@pytest.mark.parametrize("prompt", ["caption en", "answer en what is on the table ?"])
def test_greedy_generation_and_every_step_logits_match(engine, reference, photos, prompt):
    params = SamplingParams(max_new_tokens=40, ignore_eos=True)
    for photo in photos[:2]:
        ids, pixels = _reference_inputs(engine, photo, prompt)
        assert ids.shape[1] > engine.cfg.text.sliding_window  # the window really is shorter than the prefix
        with torch.inference_mode():
            ref = reference.generate(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids),
                                     token_type_ids=torch.zeros_like(ids), max_new_tokens=40, do_sample=False,
                                     output_logits=True, return_dict_in_generate=True, eos_token_id=None)
        ref_new = ref.sequences[0, ids.shape[1]:].tolist()

        ours_logits = _our_step_logits(engine, photo, prompt, 40)
        result = engine.generate(photo, prompt, params)
        assert result.token_ids == ref_new
        assert len(set(result.token_ids)) > 3  # the toy's weights make greedy decoding wander
        assert len(ours_logits) == len(ref.logits) == 40
        for step, (mine, theirs) in enumerate(zip(ours_logits, ref.logits)):
            torch.testing.assert_close(mine, theirs[0], atol=ATOL, rtol=RTOL, msg=lambda m: f"step {step}: {m}")


def _our_step_logits(engine, image, prompt, n):
    """Logits of prefill and each decode step, driving the model by hand with the reference's greedy tokens."""
    model = engine.model
    prompt_ids = engine.prompt_ids(prompt)
    features = engine.image_features(engine.prepare_image(image))
    cache = model.new_cache(len(prompt_ids) + n, len(prompt_ids))
    out = []
    with torch.inference_mode():
        logits = model(torch.tensor([prompt_ids]), 0, cache, image_features=features)
        for i in range(n):
            out.append(logits[0, -1])
            token = int(out[-1].argmax())
            if i + 1 < n:
                logits = model(torch.tensor([[token]]), len(prompt_ids) + i, cache)
    return out


def test_prefill_logits_at_every_position_match(engine, reference, photos):
    ids, pixels = _reference_inputs(engine, photos[2], "describe en")
    features = engine.image_features(engine.prepare_image(photos[2]))
    with torch.inference_mode():
        mine = engine.model(ids, 0, engine.model.new_cache(ids.shape[1], ids.shape[1]), features, all_logits=True)
        theirs = reference(input_ids=ids, pixel_values=pixels, token_type_ids=torch.zeros_like(ids)).logits
    torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=RTOL)


def test_full_recompute_with_suffix_matches_reference(engine, reference, photos):
    """Prefix bidirectional, generated suffix causal and windowed, all in one pass, on both sides."""
    prompt = "detect cat ; table"
    result = engine.generate(photos[0], prompt, SamplingParams(max_new_tokens=20, ignore_eos=True))
    prefix = engine.prompt_ids(prompt)
    ids = torch.tensor([prefix + result.token_ids])
    token_types = torch.tensor([[0] * len(prefix) + [1] * len(result.token_ids)])
    features = engine.image_features(engine.prepare_image(photos[0]))
    with torch.inference_mode():
        mine = engine.model(ids, 0, engine.model.new_cache(ids.shape[1], len(prefix)), features, all_logits=True)
        theirs = reference(input_ids=ids, pixel_values=engine.prepare_image(photos[0]).pixels[None],
                           token_type_ids=token_types).logits
    torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=RTOL)


def test_vision_features_match(engine, reference, photos):
    pixels = engine.prepare_image(photos[3]).pixels[None]
    with torch.inference_mode():
        theirs = reference.get_image_features(pixels).pooler_output
        mine = engine.model.encode_image(pixels)
    torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=RTOL)


def test_cached_decode_equals_full_recompute(engine, photos):
    prompt = "caption es"
    prefix = engine.prompt_ids(prompt)
    steps = _our_step_logits(engine, photos[1], prompt, 24)
    tokens = [int(s.argmax()) for s in steps]
    features = engine.image_features(engine.prepare_image(photos[1]))
    ids = torch.tensor([prefix + tokens[:-1]])
    with torch.inference_mode():
        full = engine.model(ids, 0, engine.model.new_cache(ids.shape[1], len(prefix)), features, all_logits=True)
    for i, step in enumerate(steps):
        torch.testing.assert_close(step, full[0, len(prefix) - 1 + i], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("spelling", ["transformers4", "transformers5"])
def test_every_key_spelling_loads_to_identical_outputs(make_checkpoint, engine, photos, spelling):
    other = Engine.load(make_checkpoint(spelling=spelling, shards=3), device="cpu", dtype="float32")
    for (name, a), (name_b, b) in zip(engine.model.state_dict().items(), other.model.state_dict().items()):
        assert name == name_b and torch.equal(a, b), name
    params = SamplingParams(max_new_tokens=16, ignore_eos=True)
    assert other.generate(photos[0], "ocr", params).token_ids == engine.generate(photos[0], "ocr", params).token_ids


def test_single_file_checkpoint_loads(make_checkpoint, engine):
    single = Engine.load(make_checkpoint(shards=1), device="cpu", dtype="float32")
    for a, b in zip(engine.model.parameters(), single.model.parameters()):
        assert torch.equal(a, b)


def test_streamed_deltas_concatenate_to_the_decoded_text(engine, photos):
    events = list(engine.stream(photos[0], "caption en", SamplingParams(max_new_tokens=48, ignore_eos=True)))
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    ids = [e.token_id for e in tokens if e.token_id is not None]
    assert "".join(e.text for e in tokens) == engine.tokenizer.decode(ids)
    assert events[-1].generated_tokens == len(ids) == 48
    assert events[-1].prompt_tokens == len(engine.prompt_ids("caption en"))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_matches_the_reference_in_the_same_dtype(toy_model_dir, photos, dtype):
    """Same op order as the reference (fp32 norms and softmax, the embedding scale rounded to the dtype), so half
    precision agrees too: observed bit-identical on CPU, greedy tokens identical."""
    torch_dtype = getattr(torch, dtype)
    engine = Engine.load(toy_model_dir, device="cpu", dtype=dtype)
    ref = transformers.PaliGemmaForConditionalGeneration.from_pretrained(
        toy_model_dir, attn_implementation="eager", dtype=torch_dtype).eval()
    ids, pixels = _reference_inputs(engine, photos[0], "caption en")
    with torch.inference_mode():
        mine = engine.model(ids, 0, engine.model.new_cache(ids.shape[1], ids.shape[1]),
                            engine.image_features(engine.prepare_image(photos[0])), all_logits=True)
        theirs = ref(input_ids=ids, pixel_values=pixels.to(torch_dtype), token_type_ids=torch.zeros_like(ids)).logits
        greedy = ref.generate(input_ids=ids, pixel_values=pixels.to(torch_dtype), attention_mask=torch.ones_like(ids),
                              token_type_ids=torch.zeros_like(ids), max_new_tokens=24, do_sample=False,
                              eos_token_id=None)
    assert mine.dtype == torch_dtype
    torch.testing.assert_close(mine.float(), theirs.float(), atol=2e-2, rtol=0)
    ours = engine.generate(photos[0], "caption en", SamplingParams(max_new_tokens=24, ignore_eos=True)).token_ids
    assert ours == greedy[0, ids.shape[1]:].tolist()
