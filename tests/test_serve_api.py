"""The server driven by the official `openai` and `ollama` clients (and curl), streaming and not: greedy answers
equal `python -m vlm_core generate --json` for the same image and prompt, the prompt rule applies, the Ollama
metadata endpoints answer, and 8 concurrent clients get their one-at-a-time answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import ollama
import openai
import pytest

from .serve_server import ROOT, Server, b64, data_url, random_png

MAX = 12


@pytest.fixture(scope="module")
def server(toy_model_dir):
    s = Server(toy_model_dir)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "a.png"
    path.write_bytes(random_png(1))
    return path


def reference(model_dir, image_path, prompt: str, max_new: int = MAX) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "vlm_core", "generate", "--model", str(model_dir), "--image",
                          str(image_path), "--prompt", prompt, "--max-new-tokens", str(max_new), "--json",
                          "--device", "cpu", "--dtype", "float32"], capture_output=True, text=True, env=env,
                         check=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def want(toy_model_dir, image_file):
    return {p: reference(toy_model_dir, image_file, p)
            for p in ("caption en", "answer en what is in the picture?", "detect cat ; dog")}


def openai_client(server, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)


def user(text: str, image: bytes) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text},
                                         {"type": "image_url", "image_url": {"url": data_url(image)}}]}]


def test_openai_client_answers_as_generate_does(server, image_file, want, toy_model_dir):
    client = openai_client(server)
    assert [m.id for m in client.models.list()] == [toy_model_dir.name]
    r = client.chat.completions.create(model=toy_model_dir.name, messages=user("caption en", image_file.read_bytes()),
                                       max_tokens=MAX)
    ref = want["caption en"]
    assert r.choices[0].message.content == ref["text"]
    assert r.choices[0].finish_reason == ("length" if ref["stop_reason"] == "max_new_tokens" else "stop")
    assert r.usage.prompt_tokens == ref["prompt_tokens"]  # the image tokens are counted
    assert r.usage.completion_tokens == len(ref["token_ids"])


def test_openai_streaming_and_the_prompt_rule(server, image_file, want, toy_model_dir):
    client = openai_client(server)
    chunks = list(client.chat.completions.create(
        model=toy_model_dir.name, messages=user("what is in the picture?", image_file.read_bytes()),
        max_tokens=MAX, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == want["answer en what is in the picture?"]["text"]  # a question becomes `answer en ...`
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    raw = client.chat.completions.create(model=toy_model_dir.name, max_tokens=MAX, extra_body={"raw": True},
                                         messages=user("answer en what is in the picture?",
                                                       image_file.read_bytes()))
    assert raw.choices[0].message.content == text


def test_objects_carry_boxes_in_the_request_image_pixels(server, image_file, want, toy_model_dir):
    r = openai_client(server).chat.completions.create(
        model=toy_model_dir.name, messages=user("detect cat ; dog", image_file.read_bytes()), max_tokens=MAX)
    ref = want["detect cat ; dog"]
    assert r.choices[0].message.content == ref["text"]  # the raw answer, loc tokens and all
    if "<loc" in ref["text"]:
        objects = r.model_extra["objects"]
        assert [o["box"] for o in objects] == [o["box"] for o in ref["objects"]]
        assert all(o["mask"] is None for o in objects)  # no mask decoder installed here


def test_ollama_client_generate_and_chat_stream_and_not(server, image_file, want, toy_model_dir):
    client = ollama.Client(host=server.url)
    name = toy_model_dir.name
    ref = want["caption en"]
    r = client.generate(model=name, prompt="caption en", images=[image_file.read_bytes()],
                        options={"num_predict": MAX}, stream=False)
    assert r.response == ref["text"]
    assert r.done and r.done_reason in ("stop", "length")
    assert r.prompt_eval_count == ref["prompt_tokens"] and r.eval_count == len(ref["token_ids"])
    assert r.total_duration >= r.eval_duration > 0  # nanoseconds
    parts = list(client.generate(model=name, prompt="caption en", images=[image_file.read_bytes()],
                                 options={"num_predict": MAX}, stream=True))
    assert "".join(p.response for p in parts) == ref["text"] and parts[-1].done
    chat = client.chat(model=name, options={"num_predict": MAX}, messages=[
        {"role": "user", "content": "caption en", "images": [image_file.read_bytes()]}])
    assert chat.message.content == ref["text"]
    streamed = list(client.chat(model=name, stream=True, options={"num_predict": MAX}, messages=[
        {"role": "user", "content": "hello", "images": [image_file.read_bytes()]},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "what is in the picture?"}]))  # the last user text, the most recent image
    assert "".join(p.message.content for p in streamed) == want["answer en what is in the picture?"]["text"]


def test_ollama_metadata_endpoints(server, toy_model_dir):
    client = ollama.Client(host=server.url)
    name = toy_model_dir.name
    assert [m.model for m in client.list().models] == [name]
    assert "vision" in client.show(name).capabilities
    assert [m.model for m in client.ps().models] == [name]
    with pytest.raises(ollama.ResponseError) as e:
        client.show("google/paligemma2-10b-mix-448")
    assert e.value.status_code == 404 and "download" in e.value.error


def test_curl_one_request(server, image_file, want, toy_model_dir, tmp_path):
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"model": toy_model_dir.name, "prompt": "caption en", "stream": False,
                                "images": [b64(image_file.read_bytes())], "options": {"num_predict": MAX}}))
    out = subprocess.run(["curl", "-s", "-S", server.url + "/api/generate", "-d", f"@{body}"], capture_output=True,
                         text=True, check=True, timeout=120)
    assert json.loads(out.stdout)["response"] == want["caption en"]["text"]


def test_eight_concurrent_clients_get_their_one_at_a_time_answers(server, toy_model_dir):
    prompts = ["caption en", "ocr", "describe en", "detect car", "what colour is it?", "caption es", "segment cat",
               "question en red"]
    limits = [12, 5, 12, 9, 12, 3, 12, 7]
    images = [random_png(10 + i, (40 + 4 * i, 50)) for i in range(8)]
    client = openai_client(server)

    def ask(i: int):
        r = client.chat.completions.create(model=toy_model_dir.name, messages=user(prompts[i], images[i]),
                                           max_tokens=limits[i])
        return r.choices[0].message.content, r.usage.completion_tokens

    alone = [ask(i) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, range(8)))
    assert together == alone
    assert server.wait_log("POST /v1/chat/completions 200")
