"""Per-row prompts: one batch holds different prompts (different prefix lengths), different max_new_tokens and rows
that end early on <eos>, and every row's greedy float32 answer equals its one-at-a-time answer. A finished row can
take a new request mid-batch (`prefill_rows`) without disturbing the rows still decoding.

The <eos> trick is test_batch.py's: the toy's <eos> embedding becomes a scaled copy of a token it often writes.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from PIL import Image

from vlm_core.runtime.batch import generate_batch
from vlm_core.runtime.decode_step import StaticDecoder, sample_tokens
from vlm_core.runtime.engine import Engine
from vlm_core.runtime.generate import STOP_EOS, STOP_MAX_TOKENS, SamplingParams

from .test_batch import with_early_eos

PROMPTS = ["caption en", "answer en what colour is the small car on the left of the road",
           "ocr", "detect cat ; dog ; person", "caption en", "describe es"]
LIMITS = [24, 7, 24, 13, 24, 2]


def random_images(n: int, seed: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (50, 40 + 3 * i, 3), dtype=np.uint8)) for i in range(n)]


@pytest.fixture(scope="module")
def engine(toy_model_dir) -> Engine:
    return with_early_eos(Engine.load(toy_model_dir, device="cpu", dtype="float32"), random_images(6), 24)


@pytest.fixture(scope="module")
def singles(engine) -> list:
    return [engine.generate(img, prompt, SamplingParams(max_new_tokens=limit))
            for img, prompt, limit in zip(random_images(6), PROMPTS, LIMITS)]


def test_rows_with_different_prompts_and_limits_equal_their_one_at_a_time_answers(engine, singles):
    images = random_images(6)
    prompt_ids = [engine.prompt_ids(p) for p in PROMPTS]
    assert len({len(p) for p in prompt_ids}) >= 4  # the rows really have different prefix lengths
    reasons = collections.Counter(s.stats.stop_reason for s in singles)
    assert reasons[STOP_EOS] >= 1 and reasons[STOP_MAX_TOKENS] >= 1, reasons  # an early <eos> row among them

    pixels = torch.stack([engine.prepare_image(img).pixels for img in images])
    rows, stats = generate_batch(engine.model, engine.tokenizer, prompt_ids, pixels, SamplingParams(),
                                 max_new_tokens=LIMITS)


    for row, single in zip(rows, singles):
        assert list(row.token_ids) == single.token_ids
        assert row.text == single.text
        assert row.stop_reason == single.stats.stop_reason
    assert stats.prompt_tokens == max(len(p) for p in prompt_ids)


def test_one_prompt_for_all_rows_still_works_and_a_prompt_count_mismatch_is_refused(engine):
    images = random_images(3)
    pixels = torch.stack([engine.prepare_image(img).pixels for img in images])
    singles = [engine.generate(img, "ocr", SamplingParams(max_new_tokens=5)) for img in images]
    rows, _ = generate_batch(engine.model, engine.tokenizer, engine.prompt_ids("ocr"), pixels,
                             SamplingParams(max_new_tokens=5))
    assert [list(r.token_ids) for r in rows] == [s.token_ids for s in singles]
    with pytest.raises(ValueError, match="one of each per row"):
        generate_batch(engine.model, engine.tokenizer, [engine.prompt_ids("ocr")] * 2, pixels, SamplingParams())


@torch.inference_mode()
def test_a_finished_row_takes_a_new_request_mid_batch(engine, singles):
    """Row 1 starts a second request after row 0 has decoded a few tokens; both rows equal their batch-1 answers
    (what the server's scheduler does when a request arrives while a batch runs)."""
    images = random_images(6)
    greedy = SamplingParams()
    a, b = 0, 3  # a long caption row and a detect row (a different prefix length)
    want_a, want_b = singles[a].token_ids, singles[b].token_ids
    ids = [engine.prompt_ids(PROMPTS[i]) for i in (a, b)]
    feats = [engine.image_features(engine.prepare_image(images[i])) for i in (a, b)]
    decoder = StaticDecoder(engine.model, 256, batch=2)
    got_a = [int(sample_tokens(decoder.prefill_rows(0, torch.tensor([ids[0]]), feats[0]), greedy, None)[0])]
    decoder.release(1)  # row 1 idles (fed a dummy token) until its request comes
    for _ in range(4):
        got_a.append(int(sample_tokens(decoder.step(torch.tensor([got_a[-1], 0])), greedy, None)[0]))
    got_b = [int(sample_tokens(decoder.prefill_rows(1, torch.tensor([ids[1]]), feats[1]), greedy, None)[0])]
    while len(got_a) < len(want_a) + 1 or len(got_b) < len(want_b) + 1:
        picked = sample_tokens(decoder.step(torch.tensor([got_a[-1], got_b[-1]])), greedy, None).tolist()
        got_a.append(picked[0])
        got_b.append(picked[1])
    assert got_a[:len(want_a)] == want_a
    assert got_b[:len(want_b)] == want_b
