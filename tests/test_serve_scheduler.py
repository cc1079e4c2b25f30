"""The scheduler on the real toy engine: concurrent requests with different prompts and limits each give their
one-at-a-time answer, a request arriving mid-batch joins it, cancel stops a row within a token, a full queue says
QueueFull, the window's priority goes first, stop strings cut the text, and a seeded sample repeats its batch-1 run.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from vlm_core.runtime.engine import Engine
from vlm_core.runtime.generate import STOP_CANCELLED, STOP_EOS, STOP_MAX_TOKENS, SamplingParams
from vlm_core.runtime.scheduler import (PRIORITY_API, PRIORITY_WINDOW, STOP_STRING, Delta, Failed, Finished,
                                        QueueFull, Request, Scheduler)

from .test_batch import with_early_eos

PROMPTS = ["caption en", "answer en what is on the table next to the window", "ocr", "detect cat ; dog",
           "caption en", "describe fr", "segment the red car", "caption en"]

LIMITS = [20, 6, 20, 11, 20, 3, 20, 14]


def images(n: int, seed: int = 5) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (48, 44 + 2 * i, 3), dtype=np.uint8)) for i in range(n)]


@pytest.fixture(scope="module")
def engine(toy_model_dir) -> Engine:
    return with_early_eos(Engine.load(toy_model_dir, device="cpu", dtype="float32"), images(8), 20)


@pytest.fixture(scope="module")
def singles(engine):
    return [engine.generate(img, p, SamplingParams(max_new_tokens=n)) for img, p, n in zip(images(8), PROMPTS, LIMITS)]


@pytest.fixture
def scheduler(engine):
    made = []

    def make(**kwargs) -> Scheduler:
        made.append(Scheduler(engine, **kwargs))
        return made[-1]

    yield make
    for s in made:
        s.close()


def first_delta(ticket_events: list, ready: threading.Event):
    def on_event(event):
        ticket_events.append(event)
        ready.set()
    return on_event


def test_concurrent_requests_equal_their_one_at_a_time_answers(engine, singles, scheduler):
    assert {s.stats.stop_reason for s in singles} >= {STOP_EOS, STOP_MAX_TOKENS}
    sched = scheduler(max_batch=8)
    tickets = [sched.submit(Request(img, p, SamplingParams(max_new_tokens=n)))
               for img, p, n in zip(images(8), PROMPTS, LIMITS)]
    for ticket, single in zip(tickets, singles):
        events = list(ticket)
        done = events[-1]
        assert isinstance(done, Finished)
        assert list(done.token_ids) == single.token_ids
        assert done.text == single.text == "".join(e.text for e in events[:-1])
        assert done.stop_reason == single.stats.stop_reason
        assert done.prompt_tokens == single.stats.prompt_tokens


def test_a_request_arriving_mid_batch_joins_it_and_keeps_its_answer(engine, singles, scheduler):
    sched = scheduler(max_batch=2)
    long_params = SamplingParams(max_new_tokens=60, ignore_eos=True)
    want_long = engine.generate(images(8)[0], "caption en", long_params)
    events, started = [], threading.Event()
    long = sched.submit(Request(images(8)[0], "caption en", long_params), on_event=first_delta(events, started))
    assert started.wait(60)
    joined = sched.submit(Request(images(8)[3], PROMPTS[3], SamplingParams(max_new_tokens=LIMITS[3])))
    result = joined.result()
    assert not long.done.is_set()  # it finished while the long request still ran: it joined the batch
    assert list(result.token_ids) == singles[3].token_ids
    assert long.done.wait(60)
    assert list(events[-1].token_ids) == want_long.token_ids


def test_cancel_stops_a_running_request_within_a_token_and_a_queued_one_at_once(engine, scheduler):
    sched = scheduler(max_batch=1)
    events, started = [], threading.Event()
    params = SamplingParams(max_new_tokens=200, ignore_eos=True)
    running = sched.submit(Request(images(1)[0], "caption en", params), on_event=first_delta(events, started))
    assert started.wait(60)
    queued = sched.submit(Request(images(1)[0], "ocr", params))
    queued.cancel()
    assert queued.result().stop_reason == STOP_CANCELLED
    seen = len(events)
    running.cancel()
    assert running.done.wait(30)
    done = events[-1]
    assert isinstance(done, Finished) and done.stop_reason == STOP_CANCELLED
    assert len(done.token_ids) <= seen + 1  # at most the token already being computed when cancel came


def test_a_full_queue_raises_queue_full_and_the_window_goes_first(engine, scheduler):
    sched = scheduler(max_batch=1, max_queue=2)
    events, started = [], threading.Event()
    params = SamplingParams(max_new_tokens=200, ignore_eos=True)
    busy = sched.submit(Request(images(1)[0], "caption en", params), on_event=first_delta(events, started))
    assert started.wait(60)
    order = []
    short = SamplingParams(max_new_tokens=2)
    api = sched.submit(Request(images(2)[1], "ocr", short, priority=PRIORITY_API),
                       on_event=lambda e: isinstance(e, Finished) and order.append("api"))
    window = sched.submit(Request(images(2)[1], "ocr", short, priority=PRIORITY_WINDOW),
                          on_event=lambda e: isinstance(e, Finished) and order.append("window"))
    with pytest.raises(QueueFull, match="retry"):
        sched.submit(Request(images(1)[0], "ocr", short))
    busy.cancel()
    assert api.done.wait(60) and window.done.wait(60)
    assert order == ["window", "api"]


def test_stop_strings_cut_the_text_before_them(engine, singles, scheduler):
    sched = scheduler()
    single = singles[0]
    cut = single.text[3:6]
    assert cut and cut in single.text
    ticket = sched.submit(Request(images(8)[0], PROMPTS[0], SamplingParams(max_new_tokens=LIMITS[0]), stop=(cut,)))
    events = list(ticket)
    assert events[-1].stop_reason == STOP_STRING
    assert events[-1].text == single.text[:single.text.index(cut)]
    assert "".join(e.text for e in events if isinstance(e, Delta)) == events[-1].text  # nothing held back leaks


def test_seeded_sampling_repeats_the_batch_1_sample_and_errors_come_back_as_failed(engine, scheduler):
    sched = scheduler()
    params = SamplingParams(max_new_tokens=10, temperature=0.8, top_p=0.9, seed=11)
    want = engine.generate(images(1)[0], "caption en", params)
    tickets = [sched.submit(Request(images(1)[0], "caption en", params)),
               sched.submit(Request(images(2)[1], "ocr", SamplingParams(max_new_tokens=4))),
               sched.submit(Request(b"not an image", "ocr"))]
    assert list(tickets[0].result().token_ids) == want.token_ids
    assert isinstance(tickets[1].result(), Finished)
    failed = tickets[2].result()
    assert isinstance(failed, Failed) and "image" in failed.message
