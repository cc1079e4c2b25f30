"""Generation: streaming text, sampling, cancellation, stop reasons, the vision-feature cache, output parsing."""

from __future__ import annotations

import random

import pytest
import torch

from vlm_core.runtime.engine import Engine
from vlm_core.runtime.generate import STOP_CANCELLED, STOP_EOS, STOP_MAX_TOKENS, GenerationStats, SamplingParams, TokenEvent
from vlm_core.runtime.answers import parse_detections
from vlm_core.runtime.tokenizer import StreamDecoder, Tokenizer


@pytest.fixture(scope="module")
def engine(toy_model_dir):
    return Engine.load(toy_model_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def tokenizer(toy_model_dir):
    return Tokenizer(toy_model_dir / "tokenizer.model")


def test_prompt_layout(engine):
    ids = engine.prompt_ids("caption en")
    n = engine.cfg.num_image_tokens
    assert ids[:n] == [engine.cfg.image_token_index] * n
    assert ids[n] == engine.tokenizer.bos_id
    assert engine.tokenizer.decode(ids[n + 1:]) == "caption en\n"
    assert ids[-1] == engine.tokenizer.encode("\n")[-1]


def test_stream_decoder_yields_whole_characters_that_add_up(tokenizer):
    texts = ["a cat on the table", "Ünïcödé café 東京 😀 naïve", "<loc0012><loc0100><loc0500><loc1000> cat ; dog",
             "€ ✓ 😀😀 \u00a0 tabs\tand\nlines", "  leading spaces"]
    for text in texts:
        ids = tokenizer.encode(text)
        assert any(tokenizer.sp.is_byte(i) for i in ids) or "€" not in text  # byte fallback really exercised
        dec = StreamDecoder(tokenizer)
        deltas = [dec.push(i) for i in ids] + [dec.flush()]
        assert "".join(deltas) == tokenizer.decode(ids) == text
        assert not any("\ufffd" in d for d in deltas)


def test_stream_decoder_on_random_id_sequences(tokenizer):
    rng = random.Random(0)
    for _ in range(200):
        ids = [rng.randrange(tokenizer.vocab_size) for _ in range(rng.randint(1, 30))]
        dec = StreamDecoder(tokenizer)
        deltas = [dec.push(i) for i in ids] + [dec.flush()]
        assert "".join(deltas) == tokenizer.decode(ids)


def test_stop_on_eos_is_not_reported_as_a_token(engine, monkeypatch):
    # Make <eos> the greedy choice after 3 tokens by wrapping the model's output.
    model, calls = engine.model, {"n": 0}
    original = model.forward

    def forward(*args, **kwargs):
        logits = original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 4:
            logits[..., engine.tokenizer.eos_id] = 1e4
        return logits

    monkeypatch.setattr(model, "forward", forward)
    result = engine.generate(engine.prepare_image(_image()), "caption en", SamplingParams(max_new_tokens=20))
    assert result.stats.stop_reason == STOP_EOS
    assert len(result.token_ids) == 3 and engine.tokenizer.eos_id not in result.token_ids


def _image():
    from PIL import Image

    return Image.new("RGB", (64, 48), (200, 30, 30))


def test_max_new_tokens_and_stats(engine):
    events = list(engine.stream(_image(), "caption en", SamplingParams(max_new_tokens=7, ignore_eos=True)))
    stats = events[-1]
    assert isinstance(stats, GenerationStats) and stats.stop_reason == STOP_MAX_TOKENS
    assert stats.generated_tokens == 7 == sum(1 for e in events if isinstance(e, TokenEvent) and e.token_id is not None)
    assert stats.ttft_s > 0 and stats.decode_tokens_per_s > 0 and stats.total_s >= stats.ttft_s


def test_cancel_takes_effect_within_one_token(engine):
    produced = []

    def should_stop():
        return len(produced) >= 5

    for event in engine.stream(_image(), "caption en", SamplingParams(max_new_tokens=50, ignore_eos=True), should_stop):
        if isinstance(event, TokenEvent):
            produced.append(event)
        else:
            stats = event
    assert stats.stop_reason == STOP_CANCELLED and stats.generated_tokens == 5


def test_cancel_before_start_generates_nothing(engine):
    result = engine.generate(_image(), "caption en", SamplingParams(max_new_tokens=5), should_stop=lambda: True)
    assert result.token_ids == [] and result.stats.stop_reason == STOP_CANCELLED


def test_sampling_is_reproducible_with_a_seed_and_differs_from_greedy(engine):
    image = engine.prepare_image(_image())
    sampled = SamplingParams(max_new_tokens=24, temperature=1.5, top_k=50, top_p=0.95, seed=7, ignore_eos=True)
    a = engine.generate(image, "caption en", sampled).token_ids
    b = engine.generate(image, "caption en", sampled).token_ids
    c = engine.generate(image, "caption en", SamplingParams(**{**sampled.__dict__, "seed": 8})).token_ids
    greedy = engine.generate(image, "caption en", SamplingParams(max_new_tokens=24, ignore_eos=True)).token_ids
    assert a == b and a != c and a != greedy


def test_top_k_one_is_greedy(engine):
    image = engine.prepare_image(_image())
    greedy = engine.generate(image, "ocr", SamplingParams(max_new_tokens=12, ignore_eos=True)).token_ids
    k1 = engine.generate(image, "ocr", SamplingParams(max_new_tokens=12, temperature=2.0, top_k=1, seed=1,
                                                      ignore_eos=True)).token_ids
    assert k1 == greedy


def test_top_p_keeps_only_the_nucleus():
    from vlm_core.runtime.generate import sample_next

    logits = torch.log(torch.tensor([0.6, 0.3, 0.05, 0.05]))
    params = SamplingParams(temperature=1.0, top_p=0.8, seed=0)
    g = torch.Generator().manual_seed(0)
    seen = {sample_next(logits, params, g) for _ in range(300)}
    assert seen == {0, 1}


def test_vision_features_are_cached_per_image_content(engine, monkeypatch):
    calls = {"n": 0}
    original = engine.model.encode_image

    def counting(pixels):
        calls["n"] += 1
        return original(pixels)

    monkeypatch.setattr(engine.model, "encode_image", counting)
    engine.free_memory()
    params = SamplingParams(max_new_tokens=2)
    engine.generate(_image(), "caption en", params)
    engine.generate(_image(), "answer en what colour?", params)  # same content, new object
    assert calls["n"] == 1
    from PIL import Image

    engine.generate(Image.new("RGB", (64, 48), (0, 0, 255)), "caption en", params)
    assert calls["n"] == 2


def test_parse_detections_scales_to_the_original_image():
    text = "<loc0256><loc0512><loc0768><loc1023> cat ; <loc0000><loc0000><loc0512><loc0512> red car"
    dets = parse_detections(text, width=2048, height=1024)
    assert [d.label for d in dets] == ["cat", "red car"]
    # loc / 1023, as big_vision's evaluator (tests/test_answers.py has the rest)
    assert dets[0].box == pytest.approx((512 / 1023 * 2048, 256 / 1023 * 1024, 2048.0, 768 / 1023 * 1024))
    assert dets[1].box == pytest.approx((0.0, 0.0, 512 / 1023 * 2048, 512 / 1023 * 1024))


def test_parse_segmentation_codes_and_bad_input():
    seg = "".join(f"<seg{i:03d}>" for i in range(16))
    dets = parse_detections(f"<loc0100><loc0100><loc0200><loc0200>{seg} dog", 100, 100)
    assert dets[0].label == "dog" and dets[0].seg_codes == tuple(range(16))
    assert parse_detections("a cat sitting on a mat", 10, 10) == []
    assert parse_detections("<loc0500><loc0500><loc0100><loc0100> upside down", 10, 10) == []
    assert parse_detections("<loc0100><loc0200> cut short", 10, 10) == []
