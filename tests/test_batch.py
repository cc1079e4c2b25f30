"""Batched generation: each row of a batch gives exactly its batch-1 answer, finished rows stay frozen, cancel
works between tokens, the cache is allocated once, and the runner turns unreadable files into error rows.

The random toy almost never writes <eos>, so the `mixed_engine` fixture makes it do so part-way through some
answers: the <eos> row of the tied embedding becomes a slightly scaled copy of a token the toy often writes, so a
row ends where that token would first have come. Rows then stop after 1..N tokens or run to max_new_tokens.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from PIL import Image

from vlm_core.runtime.batch import BatchRunner, auto_batch_size, generate_batch, row_bytes
from vlm_core.runtime.decode_step import BUCKET, bucket_for
from vlm_core.runtime.engine import Engine
from vlm_core.runtime.generate import STOP_CANCELLED, STOP_EOS, STOP_MAX_TOKENS, SamplingParams

MAX_NEW = 24


def random_images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (40 + i, 60, 3), dtype=np.uint8)) for i in range(n)]


@pytest.fixture(scope="module")
def mixed_engine(toy_model_dir) -> Engine:
    engine = Engine.load(toy_model_dir, device="cpu")
    return with_early_eos(engine, random_images(12), MAX_NEW)


def with_early_eos(engine: Engine, images: list[Image.Image], max_new_tokens: int) -> Engine:
    """Make some answers end early on <eos>: its embedding becomes a scaled copy of the token these images'
    captions write most, so rows of one batch finish at different steps."""
    firsts = [engine.generate(img, "caption en", SamplingParams(max_new_tokens=max_new_tokens)).token_ids
              for img in images]
    common = collections.Counter(t for ids in firsts for t in set(ids)).most_common(1)[0][0]
    weight = engine.model.text.embed_tokens.weight
    with torch.no_grad():
        weight[engine.tokenizer.eos_id] = weight[common] * 1.05
    engine.free_memory()  # no cached features from before the change
    return engine


@pytest.fixture(scope="module")
def singles(mixed_engine) -> list:
    """The batch-1 answers for random_images(12): the reference every batched row must equal."""
    return [mixed_engine.generate(img, "caption en", SamplingParams(max_new_tokens=MAX_NEW))
            for img in random_images(12)]


def batch_of(engine: Engine, images) -> torch.Tensor:
    return torch.stack([engine.prepare_image(img).pixels for img in images])


def test_every_row_equals_its_batch_1_answer_with_short_and_long_rows(mixed_engine, singles):
    images = random_images(12)
    params = SamplingParams(max_new_tokens=MAX_NEW)
    rows, stats = generate_batch(mixed_engine.model, mixed_engine.tokenizer, mixed_engine.prompt_ids("caption en"),
                                 batch_of(mixed_engine, images), params)

    reasons = collections.Counter(s.stats.stop_reason for s in singles)
    assert reasons[STOP_EOS] >= 2 and reasons[STOP_MAX_TOKENS] >= 2, reasons  # the batch really mixes lengths
    assert len({len(s.token_ids) for s in singles}) >= 3
    for row, single in zip(rows, singles):
        assert list(row.token_ids) == single.token_ids
        assert row.text == single.text
        assert row.stop_reason == single.stats.stop_reason
    assert stats.steps == MAX_NEW - 1  # the longest row decides, and the batch ends when it is done


def test_batch_ends_when_all_rows_are_done(mixed_engine, singles):
    images = random_images(12)
    params = SamplingParams(max_new_tokens=MAX_NEW)
    short = [img for img, s in zip(images, singles) if s.stats.stop_reason == STOP_EOS]
    rows, stats = generate_batch(mixed_engine.model, mixed_engine.tokenizer, mixed_engine.prompt_ids("caption en"),
                                 batch_of(mixed_engine, short), params)
    longest = max(len(s.token_ids) for s in singles if s.stats.stop_reason == STOP_EOS)
    assert all(r.stop_reason == STOP_EOS for r in rows)
    assert stats.steps == longest  # the step that picks the last row's <eos>, then no more


def test_cancel_between_tokens_keeps_what_each_row_wrote(mixed_engine):
    images = random_images(4, seed=1)
    params = SamplingParams(max_new_tokens=MAX_NEW, ignore_eos=True)
    singles = [mixed_engine.generate(img, "caption en", params) for img in images]
    calls = []

    def stop_on_fourth_check() -> bool:
        calls.append(1)
        return len(calls) >= 4  # checks: before the prefill, then before each decode step

    rows, _ = generate_batch(mixed_engine.model, mixed_engine.tokenizer, mixed_engine.prompt_ids("caption en"),
                             batch_of(mixed_engine, images), params, should_stop=stop_on_fourth_check)
    for row, single in zip(rows, singles):
        assert row.stop_reason == STOP_CANCELLED
        assert list(row.token_ids) == single.token_ids[:3]

    runner = BatchRunner(mixed_engine, "caption en", params, batch_size=4)
    assert runner.run_chunk(images, should_stop=lambda: True) is None  # nothing half-done is reported as a result
    assert list(runner.run(images, should_stop=lambda: True)) == []


def test_kv_cache_is_allocated_once_per_batch_size_and_reused_across_batches(mixed_engine, singles, monkeypatch):
    made = []
    real = mixed_engine.model.new_cache

    def counting_new_cache(max_len, prefix_len, batch=1):
        made.append((max_len, batch))
        return real(max_len, prefix_len, batch)

    monkeypatch.setattr(mixed_engine.model, "new_cache", counting_new_cache)
    prompt = mixed_engine.prompt_ids("caption en")
    params = SamplingParams(max_new_tokens=MAX_NEW)
    generate_batch(mixed_engine.model, mixed_engine.tokenizer, prompt, batch_of(mixed_engine, random_images(5)),
                   params)
    assert made == [(bucket_for(len(prompt) + MAX_NEW), 5)]  # one static cache, a row per image

    made.clear()
    rows = list(BatchRunner(mixed_engine, "caption en", params, batch_size=4).run(random_images(12)[:11]))
    assert made == [(bucket_for(len(prompt) + MAX_NEW), 4), (bucket_for(len(prompt) + MAX_NEW), 3)]  # 4+4 share
    assert [(r.text, r.tokens) for r in rows] == [(s.text, len(s.token_ids)) for s in singles[:11]]


def test_seeded_sampling_gives_each_row_its_batch_1_sample(mixed_engine):
    images = random_images(3, seed=2)
    params = SamplingParams(max_new_tokens=12, temperature=0.9, top_k=40, top_p=0.95, seed=7)
    singles = [mixed_engine.generate(img, "caption en", params) for img in images]
    rows, _ = generate_batch(mixed_engine.model, mixed_engine.tokenizer, mixed_engine.prompt_ids("caption en"),
                             batch_of(mixed_engine, images), params)
    assert [list(r.token_ids) for r in rows] == [s.token_ids for s in singles]


def test_runner_keeps_order_records_bad_images_and_matches_batch_1(mixed_engine, singles, tmp_path):
    paths = []
    for i, img in enumerate(random_images(12)[:6]):
        paths.append(str(tmp_path / f"{i}.png"))
        img.save(paths[-1])  # PNG is lossless: the same pixels as the batch-1 reference
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    paths.insert(3, str(tmp_path / "broken.png"))
    paths.append(str(tmp_path / "missing.jpg"))
    params = SamplingParams(max_new_tokens=MAX_NEW)

    rows = list(BatchRunner(mixed_engine, "caption en", params, batch_size=3).run(paths))

    assert [r.path for r in rows] == paths
    bad = {r.path: r.error for r in rows if r.error}
    assert set(bad) == {paths[3], paths[-1]}
    assert "not an image" in bad[paths[3]]
    assert "does not exist" in bad[paths[-1]]
    good = [r for r in rows if r.error is None]
    assert [(r.text, r.tokens, r.stop_reason) for r in good] == [
        (s.text, len(s.token_ids), s.stats.stop_reason) for s in singles[:6]]
    assert all(r.seconds > 0 for r in good)


def test_auto_batch_size_fits_free_memory_with_a_margin(mixed_engine):
    prompt_len, per_row = 30, row_bytes(mixed_engine.cfg, 30, 64, mixed_engine.dtype)
    for free, margin in ((8 << 30, 2 << 30), (600 << 20, 512 << 20)):  # a quarter, or at least 512 MiB
        n = auto_batch_size(mixed_engine, prompt_len, 64, free_bytes=free, limit=10**9)
        assert n * per_row <= free - margin < (n + 1) * per_row
    assert auto_batch_size(mixed_engine, prompt_len, 64, free_bytes=100 << 30, limit=1000) == 1000  # the cap
    assert auto_batch_size(mixed_engine, prompt_len, 64, free_bytes=1 << 20) == 1  # never 0
    assert auto_batch_size(mixed_engine, prompt_len, 64, free_bytes=100 << 30) == 8  # the CPU's cap


def test_row_bytes_grow_with_the_cache_and_the_prompt(mixed_engine):
    cfg, dt = mixed_engine.cfg, mixed_engine.dtype
    t = cfg.text
    kv_per_position = 2 * t.num_hidden_layers * t.num_key_value_heads * t.head_dim * dt.itemsize
    # The cache is bucketed: 30 + 64 and 30 + 65 positions take one bucket, 30 + 64 + BUCKET one more.
    assert row_bytes(cfg, 30, 65, dt) == row_bytes(cfg, 30, 64, dt)
    assert row_bytes(cfg, 30, 64 + BUCKET, dt) - row_bytes(cfg, 30, 64, dt) == BUCKET * kv_per_position
    assert row_bytes(cfg, 300, 64, dt) > row_bytes(cfg, 30, 64, dt)
    assert row_bytes(cfg, 30, 64, torch.bfloat16) < row_bytes(cfg, 30, 64, torch.float32)
