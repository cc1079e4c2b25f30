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

from vlm_core.runtime.batch import BatchRunner, generate_batch
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


def test_runner_batches_rows_of_different_prompts_and_each_equals_its_one_at_a_time_answer(engine, tmp_path):
    """The CLI's loop with a prompt per row: 8 rows in batches of 4, both batches mixing prompts of different
    prefix lengths, with a damaged file and a prompt too long for the context among them: every answer is its
    `engine.generate` answer, the two bad rows get their errors and keep their prompts, the order is the input's."""
    params = SamplingParams(max_new_tokens=16)
    paths = []
    for i, img in enumerate(random_images(6)):
        paths.append(str(tmp_path / f"{i}.png"))
        img.save(paths[-1])  # lossless: the pixels of the reference
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    too_long = "answer en " + "why " * engine.max_positions
    paths[2:2] = [str(tmp_path / "bad.png"), paths[1]]
    prompts = [PROMPTS[0], PROMPTS[1], "ocr", too_long, *PROMPTS[2:]]
    want = {i: engine.generate(p, q, params) for i, (p, q) in enumerate(zip(paths, prompts)) if i not in (2, 3)}

    runner = BatchRunner(engine, None, params, batch_size=4, prompts=set(PROMPTS) | {"ocr"})
    rows = list(runner.run(paths, prompts=prompts))

    assert [(r.path, r.prompt) for r in rows] == list(zip(paths, prompts))
    assert "not an image" in rows[2].error
    assert "does not fit the model's context" in rows[3].error
    for i, single in want.items():
        assert (rows[i].text, rows[i].tokens, rows[i].stop_reason, rows[i].error) == (
            single.text, len(single.token_ids), single.stats.stop_reason, None), (i, prompts[i])
    assert len({len(engine.prompt_ids(p)) for p in PROMPTS[2:]}) >= 3  # the second batch mixes prefix lengths
    with pytest.raises(ValueError, match="has no prompt"):
        runner.run_chunk(paths[:1])  # a row without a prompt, and the runner has none for every row


def test_runner_refuses_a_known_prompt_past_the_context_before_any_allocation(engine):
    from vlm_core.errors import ContextError

    with pytest.raises(ContextError, match="does not fit"):
        BatchRunner(engine, "caption en", SamplingParams(), prompts=["answer en " + "why " * engine.max_positions])
    with pytest.raises(ValueError, match="needs a prompt"):
        BatchRunner(engine, None, SamplingParams())
