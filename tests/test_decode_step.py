"""The static decode step against the dynamic path it replaces, the on-device sampler, buckets, batches, and the
CUDA-graph fallback.

"The dynamic path" is the model driven by hand with a host-int start (the cache sliced to what is written), the
loop this project used before the static step and the one the parity tests prove against transformers. "Same
tokens" means: greedy, identical ids; seeded sampling on the CPU, identical ids for the same seed (both paths use the
same sampler and the same CPU generator, and their logits agree to ~1e-6). Across devices a seed is not portable (a
CUDA generator draws another stream), so there the claim is the distribution, tested below on the sampler itself.
"""

from __future__ import annotations

import logging

import pytest
import torch

from vlm_core.model import gemma
from vlm_core.runtime.decode_step import (StaticDecoder, TokenReader, bucket_for, make_generator, sample_tokens)
from vlm_core.runtime.engine import Engine
from vlm_core.runtime.generate import SamplingParams, stream_tokens

ATOL, RTOL = 2e-5, 1e-5  # float32, as the parity tests


@pytest.fixture(scope="module")
def engine(toy_model_dir):
    return Engine.load(toy_model_dir, device="cpu", dtype="float32", cuda_graphs=False)


def _features(engine, photo):
    return engine.image_features(engine.prepare_image(photo))


def _dynamic_path(model, prompt_ids, features, params, n):
    """Tokens and per-step logits of the host-int loop: model(ids, start: int, cache) with a cache of exactly the
    needed length."""
    cache = model.new_cache(len(prompt_ids) + n, len(prompt_ids), batch=features.shape[0])
    generator = make_generator(params.seed, model.device)
    ids = torch.tensor([prompt_ids] * features.shape[0])
    tokens, all_logits = [], []
    with torch.inference_mode():
        logits = model(ids, 0, cache, image_features=features)[:, -1]
        for i in range(n):
            all_logits.append(logits)
            picked = sample_tokens(logits, params, generator)
            tokens.append(picked.tolist())
            if i + 1 < n:
                logits = model(picked[:, None], len(prompt_ids) + i, cache)[:, -1]
    return tokens, all_logits


def _static_path(decoder, prompt_ids, features, params, n):
    generator = make_generator(params.seed, decoder.model.device)
    ids = torch.tensor([prompt_ids] * features.shape[0])
    tokens, all_logits = [], []
    with torch.inference_mode():
        logits = decoder.prefill(ids, features)
        for i in range(n):
            all_logits.append(logits.clone())
            picked = sample_tokens(logits, params, generator)
            tokens.append(picked.tolist())
            if i + 1 < n:
                logits = decoder.step(picked)
    return tokens, all_logits


def test_bucket_sizes():
    assert [bucket_for(n) for n in (1, 255, 256, 257, 400, 4096 + 130)] == [256, 256, 256, 512, 512, 4352]
    assert bucket_for(100, granularity=64) == 128
    with pytest.raises(ValueError):
        bucket_for(0)


@pytest.mark.parametrize("prompt", ["caption en", "answer en what is on the table ?", "detect cat ; dog"])
def test_greedy_static_step_equals_the_dynamic_path(engine, photos, prompt):
    params, n = SamplingParams(max_new_tokens=40, ignore_eos=True), 40
    prompt_ids = engine.prompt_ids(prompt)
    for photo in photos[:2]:
        features = _features(engine, photo)
        want, want_logits = _dynamic_path(engine.model, prompt_ids, features, params, n)
        decoder = StaticDecoder(engine.model, bucket_for(len(prompt_ids) + n))
        assert decoder.max_len > len(prompt_ids) + n  # the step really attends over masked, unwritten positions
        got, got_logits = _static_path(decoder, prompt_ids, features, params, n)
        assert got == want
        assert len({t for (t,) in got}) > 3  # the toy's greedy output wanders, so equality means something
        for step, (a, b) in enumerate(zip(got_logits, want_logits)):
            torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL, msg=lambda m: f"step {step}: {m}")
        # and the generation loop (what the engine runs) yields exactly these tokens
        streamed = engine.generate(photo, prompt, params).token_ids
        assert streamed == [t for (t,) in want]


def test_seeded_sampling_static_step_equals_the_dynamic_path_on_cpu(engine, photos):
    prompt_ids = engine.prompt_ids("caption en")
    features = _features(engine, photos[0])
    for params in (SamplingParams(max_new_tokens=32, temperature=1.3, seed=3, ignore_eos=True),
                   SamplingParams(max_new_tokens=32, temperature=0.9, top_k=20, top_p=0.9, seed=11, ignore_eos=True)):
        want, _ = _dynamic_path(engine.model, prompt_ids, features, params, 32)
        got, _ = _static_path(StaticDecoder(engine.model, bucket_for(len(prompt_ids) + 32)), prompt_ids, features,
                              params, 32)
        greedy, _ = _dynamic_path(engine.model, prompt_ids, features, SamplingParams(max_new_tokens=32), 32)
        assert got == want and got != greedy
        assert engine.generate(photos[0], "caption en", params).token_ids == [t for (t,) in want]


def test_a_reused_decoder_hides_what_the_last_request_left(engine, photos):
    """The engine keeps one decoder per bucket: a shorter prompt after a longer one must not see the stale keys."""
    params = SamplingParams(max_new_tokens=30, ignore_eos=True)
    long_ids, short_ids = engine.prompt_ids("answer en what is on the table ?"), engine.prompt_ids("ocr")
    assert len(long_ids) > len(short_ids)
    decoder = StaticDecoder(engine.model, 256)
    features = _features(engine, photos[1])
    _static_path(decoder, long_ids, features, params, 30)
    got, _ = _static_path(decoder, short_ids, features, params, 30)
    want, _ = _dynamic_path(engine.model, short_ids, features, params, 30)
    assert got == want


def test_batch_rows_equal_their_single_row_runs(engine, photos):
    prompt_ids = engine.prompt_ids("caption en")
    features = torch.cat([_features(engine, p) for p in photos[:3]])  # [3, P, D]
    greedy = SamplingParams(max_new_tokens=24, ignore_eos=True)
    decoder = StaticDecoder(engine.model, 256, batch=3)
    rows, _ = _static_path(decoder, prompt_ids, features, greedy, 24)
    for r in range(3):
        single, _ = _dynamic_path(engine.model, prompt_ids, features[r:r + 1], greedy, 24)
        assert [step[r] for step in rows] == [t for (t,) in single]

    # Sampling with one generator per row: row r is the batch-1 run with that seed.
    sampled = SamplingParams(max_new_tokens=24, temperature=1.2, top_k=40, seed=5, ignore_eos=True)
    gens = [make_generator(5, torch.device("cpu")) for _ in range(3)]
    with torch.inference_mode():
        logits = decoder.prefill(torch.tensor([prompt_ids] * 3), features)
        rows = []
        for i in range(24):
            picked = sample_tokens(logits, sampled, gens)
            rows.append(picked.tolist())
            logits = decoder.step(picked)
    for r in range(3):
        single, _ = _dynamic_path(engine.model, prompt_ids, features[r:r + 1], sampled, 24)
        assert [step[r] for step in rows] == [t for (t,) in single]


def test_decoder_bounds(engine, photos):
    decoder = StaticDecoder(engine.model, 256, batch=1)
    features = _features(engine, photos[0])
    prompt_ids = engine.prompt_ids("caption en")
    with torch.inference_mode():
        with pytest.raises(ValueError, match="holds 1 rows"):
            decoder.prefill(torch.tensor([prompt_ids] * 2), torch.cat([features, features]))
        decoder.prefill(torch.tensor([prompt_ids]), features)
        token = torch.tensor([5])
        for _ in range(256 - len(prompt_ids)):
            decoder.step(token)
        with pytest.raises(ValueError, match="cache is full"):
            decoder.step(token)
    with pytest.raises(ValueError, match="cannot hold"):
        list(stream_tokens(engine.model, engine.tokenizer, prompt_ids, features,
                           SamplingParams(max_new_tokens=400), decoder=decoder))


def test_failed_graph_capture_falls_back_to_eager_with_one_log_line(engine, photos, caplog):
    """On this CPU-only machine a capture fails for real (no CUDA): the decoder must say so once and decode the
    same tokens eagerly."""
    params = SamplingParams(max_new_tokens=20, ignore_eos=True)
    prompt_ids = engine.prompt_ids("caption en")
    features = _features(engine, photos[0])
    with caplog.at_level(logging.WARNING, logger="vlm_core.runtime.cuda_graphs"):
        decoder = StaticDecoder(engine.model, 256, graphs=True)
    assert not decoder.graphed
    records = [r for r in caplog.records if r.name == "vlm_core.runtime.cuda_graphs"]
    assert len(records) == 1 and "decoding without graphs" in records[0].getMessage()
    got, _ = _static_path(decoder, prompt_ids, features, params, 20)
    want, _ = _dynamic_path(engine.model, prompt_ids, features, params, 20)
    assert got == want


def test_engine_with_graphs_requested_on_cpu_generates_the_same(toy_model_dir, engine, photos, caplog):
    with caplog.at_level(logging.WARNING):
        graphed = Engine.load(toy_model_dir, device="cpu", dtype="float32", cuda_graphs=True)
    assert not any(r.name == "vlm_core.runtime.cuda_graphs" for r in caplog.records)  # never tried on a CPU
    params = SamplingParams(max_new_tokens=16, ignore_eos=True)
    assert graphed.generate(photos[0], "ocr", params).token_ids == engine.generate(photos[0], "ocr", params).token_ids


def test_sampler_draws_from_the_reference_distribution():
    """The exponential race picks token i with probability p_i after the temperature, top-k and nucleus cuts."""
    logits = torch.log(torch.tensor([0.4, 0.25, 0.15, 0.1, 0.06, 0.04]))
    n = 40000
    g = torch.Generator().manual_seed(0)

    def freq(params):
        picks = sample_tokens(logits.expand(n, -1), params, g)
        return torch.bincount(picks, minlength=6).float() / n

    def expected(keep, temperature=1.0):
        p = torch.softmax(logits / temperature, -1) * torch.tensor(keep, dtype=torch.float)
        return p / p.sum()

    cases = [(SamplingParams(temperature=1.0), [1] * 6, 1.0),
             (SamplingParams(temperature=2.0), [1] * 6, 2.0),
             (SamplingParams(temperature=1.0, top_k=3), [1, 1, 1, 0, 0, 0], 1.0),
             (SamplingParams(temperature=1.0, top_p=0.7), [1, 1, 1, 0, 0, 0], 1.0),  # 0.4 + 0.25 < 0.7: third stays
             (SamplingParams(temperature=1.0, top_p=0.65), [1, 1, 0, 0, 0, 0], 1.0)]
    for params, keep, temperature in cases:
        f, want = freq(params), expected(keep, temperature)
        assert torch.equal(f > 0, want > 0), params  # exactly the allowed support
        assert (f - want).abs().max() < 0.012, (params, f, want)  # ~5 standard errors at n = 40000


def test_sampler_is_greedy_at_top_k_one_and_reproducible():
    logits = torch.randn(4, 1000, generator=torch.Generator().manual_seed(1))
    params = SamplingParams(temperature=1.7, top_k=1)
    assert torch.equal(sample_tokens(logits, params, None), logits.argmax(-1))
    params = SamplingParams(temperature=1.0, top_p=0.95, seed=9)
    a = sample_tokens(logits, params, make_generator(9, torch.device("cpu")))
    b = sample_tokens(logits, params, make_generator(9, torch.device("cpu")))
    c = sample_tokens(logits, params, make_generator(10, torch.device("cpu")))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="2 generators for 4 rows"):
        sample_tokens(logits, params, [None, None])


def test_token_reader_on_cpu_reads_back_the_ids():
    reader = TokenReader(3, torch.device("cpu"))
    assert not reader.overlaps
    assert reader.read(reader.start(torch.tensor([4, 5, 6]))) == [4, 5, 6]


def test_decode_mask_is_the_prefix_lm_mask_past_the_prefix():
    queries = torch.arange(30, 40)
    for window in (None, 8):
        torch.testing.assert_close(gemma.decode_mask(queries, 64, window),
                                   gemma.prefix_lm_mask(queries, 64, 21, window))


def test_chunked_prefill_equals_one_chunk(engine, photos, monkeypatch):
    """Long prefills are split into query chunks; with a chunk far shorter than the toy prompt, the logits at every
    position (prefix and a causal, windowed suffix) must not change."""
    prefix = engine.prompt_ids("detect cat ; table")
    ids = torch.tensor([prefix + list(range(100, 120))])
    features = _features(engine, photos[0])
    with torch.inference_mode():
        whole = engine.model(ids, 0, engine.model.new_cache(ids.shape[1], len(prefix)), features, all_logits=True)
        monkeypatch.setattr(gemma, "query_chunk", lambda *_: 5)
        chunked = engine.model(ids, 0, engine.model.new_cache(ids.shape[1], len(prefix)), features, all_logits=True)
    torch.testing.assert_close(chunked, whole, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("suffix", [0, 20], ids=["prefix-only", "prefix+causal-suffix"])
def test_last_only_prefill_is_the_full_prefill(engine, photos, suffix):
    """Generation runs the last layer for the last query alone. Its logits must be the full prefill's last row, and
    every layer's cached keys and values (the last layer's included) exactly what the full prefill wrote, or the
    decode that follows would attend to something else. With a suffix, the masked (causal, windowed) path too."""
    prefix = engine.prompt_ids("detect cat ; table")
    ids = torch.tensor([prefix + list(range(100, 100 + suffix))])
    features = _features(engine, photos[0])
    model = engine.model
    with torch.inference_mode():
        full_cache, last_cache = (model.new_cache(ids.shape[1], len(prefix)) for _ in range(2))
        full = model(ids, 0, full_cache, features, all_logits=True)
        last = model(ids, 0, last_cache, features)
    assert last.shape == (1, 1, full.shape[-1])
    torch.testing.assert_close(last, full[:, -1:], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(last_cache.k, full_cache.k, atol=0, rtol=0)
    torch.testing.assert_close(last_cache.v, full_cache.v, atol=0, rtol=0)


def test_chunked_vision_attention_equals_one_chunk(engine, photos, monkeypatch):
    """SigLIP's attention is split into small query chunks (cache-sized on the CPU); the image features must not
    depend on where the chunks fall."""
    from vlm_core.model import siglip

    pixels = engine.prepare_image(photos[1]).pixels[None]
    with torch.inference_mode():
        whole = engine.model.encode_image(pixels)
        monkeypatch.setattr(siglip, "query_chunk", lambda *_: 3)
        chunked = engine.model.encode_image(pixels)
    torch.testing.assert_close(chunked, whole, atol=ATOL, rtol=RTOL)


def test_query_chunks_fit_the_cpu_cache_and_stay_large_elsewhere():
    from vlm_core.model.chunking import query_chunk

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert query_chunk(16, 4096, cpu) * 16 * 4096 * 4 <= 8 << 20  # SigLIP at 896 px: 16 heads over 4096 keys
    assert query_chunk(16, 4096, cpu) >= 16
    assert query_chunk(8, 64, cpu) >= 4096  # a 224 px prompt is one chunk
    assert query_chunk(8, 4101, gpu) >= 1024  # few launches on a GPU
