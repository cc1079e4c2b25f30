"""The model store against a real HTTP server on 127.0.0.1 that speaks the Hub's protocol (tests/hub_server.py)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import pytest

from vlm_core.weights import hub
from vlm_core.runtime.engine import Engine
from vlm_core.runtime.generate import SamplingParams

from .hub_server import COMMIT, HubServer, _etag

REPO = "google/paligemma2-3b-mix-224"
GOOD, NO_LICENCE = "hf_alice_accepted_the_licence", "hf_bob_did_not_accept"


@pytest.fixture
def server(toy_model_dir):
    with HubServer() as s:
        s.state.add_folder(REPO, toy_model_dir, gated=True, allowed_tokens={GOOD})
        s.state.users.update({GOOD: "alice", NO_LICENCE: "bob"})
        yield s


def shard_names(server):
    return sorted(n for n in server.state.repos[REPO].files if n.endswith(".safetensors"))


def fetch(server, tmp_path, **kwargs):
    kwargs.setdefault("token", GOOD)
    return hub.download(REPO, cache_dir=tmp_path / "models", endpoint=server.url, **kwargs)


def test_download_completes_and_the_model_answers(server, tmp_path, photos):
    seen = []
    path = fetch(server, tmp_path, progress=seen.append)
    assert path == tmp_path / "models" / "models--google--paligemma2-3b-mix-224" / "snapshots" / COMMIT
    assert (path.parent.parent / "refs" / "main").read_text() == COMMIT
    assert (path / "config.json").is_symlink()  # the standard cache layout: snapshots link into blobs
    files = server.state.repos[REPO].files
    assert seen[-1].done == seen[-1].total == sum(len(d) for d in files.values())
    assert {p.filename for p in seen} == set(files)
    assert server.state.served == {n: len(d) for n, d in files.items()}  # every byte exactly once
    result = Engine.load(path, device="cpu").generate(photos[0], "caption en", SamplingParams(max_new_tokens=5))
    assert result.stats.generated_tokens >= 1 or result.stats.stop_reason == "eos"
    assert hub.find_installed(REPO, tmp_path / "models") == path

    before = list(server.state.log)
    assert fetch(server, tmp_path) == path  # already there: metadata only, no file bytes
    assert not [entry for entry in server.state.log[len(before):] if entry[0] == "GET" and "/resolve/" in entry[1]]


def test_a_dropped_connection_resumes_and_fetches_only_the_rest(server, tmp_path):
    shard = shard_names(server)[0]
    server.state.drop_after[shard] = 1000
    path = fetch(server, tmp_path)
    data = server.state.repos[REPO].files[shard]
    assert (path / shard).read_bytes() == data
    assert server.state.served[shard] == len(data)
    assert ("GET", f"/{REPO}/resolve/{COMMIT}/{shard}", "bytes=1000-") in server.state.log


def test_cancel_then_restart_resumes_without_fetching_a_byte_twice(server, tmp_path):
    state = {"stop": False}

    def progress(p):
        if p.filename.endswith(".safetensors") and p.file_done > 50_000:
            state["stop"] = True  # cancel in the middle of a shard

    with pytest.raises(hub.DownloadCancelled):
        fetch(server, tmp_path, progress=progress, should_stop=lambda: state["stop"])
    partial = list((tmp_path / "models").rglob("*.incomplete"))
    files = server.state.repos[REPO].files
    assert len(partial) == 1
    shard = next(n for n, d in files.items() if _etag(n, d) == partial[0].name.removesuffix(".incomplete"))
    kept = partial[0].stat().st_size
    assert 0 < kept < len(files[shard])
    before = len(server.state.log)

    path = fetch(server, tmp_path)  # "restart": a new call picks up the partial file where it stopped
    again = [(m, p, r) for m, p, r in server.state.log[before:] if m == "GET" and "/resolve/" in p]
    assert (("GET", f"/{REPO}/resolve/{COMMIT}/{shard}", f"bytes={kept}-") in again)
    finished_before_cancel = [n for n in sorted(files) if n < shard]
    assert not [p for _, p, _ in again if p.rsplit("/", 1)[1] in finished_before_cancel]
    assert (path / shard).read_bytes() == files[shard]
    assert not list((tmp_path / "models").rglob("*.incomplete"))


@pytest.mark.parametrize("token, kind, words", [
    (None, "not_logged_in", "access token"),
    (NO_LICENCE, "licence", "https://huggingface.co/google/paligemma2-3b-mix-224"),
    ("hf_not_a_real_token_at_all", "invalid_token", "refused"),
])
def test_gated_and_token_failures_explain_themselves(server, tmp_path, token, kind, words):
    with pytest.raises(hub.HubError) as err:
        hub.download(REPO, cache_dir=tmp_path, endpoint=server.url, token=token)
    assert err.value.kind == kind and words in str(err.value)
    assert not any(n.endswith(".safetensors") for n in server.state.served)


def test_not_found(server, tmp_path):
    with pytest.raises(hub.HubError) as err:
        hub.download("google/paligemma2-99b-mix-224", cache_dir=tmp_path, endpoint=server.url, token=GOOD)
    assert err.value.kind == "not_found" and "was not found" in str(err.value)


def test_server_down(tmp_path):
    with HubServer() as s:
        url = s.url
    with pytest.raises(hub.HubError) as err:
        hub.download(REPO, cache_dir=tmp_path, endpoint=url, token=GOOD)
    assert err.value.kind == "network" and "internet connection" in str(err.value)


def test_not_enough_disk_is_said_before_any_weights_move(server, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(hub.HubError) as err:
        fetch(server, tmp_path)
    assert err.value.kind == "disk_full" and "GB is free" in str(err.value)
    assert not server.state.served


def test_offline_uses_the_cache_and_says_what_needs_a_connection(server, tmp_path, monkeypatch):
    path = fetch(server, tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(server.state.log)
    assert hub.resolve_model(REPO, tmp_path / "models") == path
    with pytest.raises(hub.HubError) as err:
        hub.download("google/paligemma2-10b-mix-224", cache_dir=tmp_path / "models", endpoint=server.url)
    assert err.value.kind == "offline" and "needs a connection" in str(err.value)
    assert len(server.state.log) == before  # offline means no request at all


def test_an_existing_hugging_face_cache_is_used_without_a_request(server, tmp_path):
    hf_path = hub.download(REPO, cache_dir=hub.hf_cache_dir(), endpoint=server.url, token=GOOD)
    before = len(server.state.log)
    assert hub.find_installed(REPO, cache_dir=tmp_path / "empty") == hf_path
    assert hub.resolve_model(REPO, tmp_path / "empty") == hf_path
    assert len(server.state.log) == before
    hub.delete_model(REPO, hub.hf_cache_dir())
    assert hub.find_installed(REPO, cache_dir=tmp_path / "empty") is None


def test_a_repo_id_that_is_not_downloaded_says_how_to_get_it(tmp_path):
    with pytest.raises(hub.HubError, match="python -m vlm_core download google/paligemma2-10b-pt-896"):
        hub.resolve_model("google/paligemma2-10b-pt-896", tmp_path)


def test_pasted_token_is_checked_and_saved_where_huggingface_hub_looks(server, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", os.path.join(os.environ["HF_HOME"], "token-test"))
    with pytest.raises(hub.HubError) as err:
        hub.check_and_save_token("hf_not_a_real_token_at_all", endpoint=server.url)
    assert err.value.kind == "invalid_token"
    with pytest.raises(hub.HubError, match="start with hf_"):
        hub.check_and_save_token("password123", endpoint=server.url)
    assert hub.check_and_save_token(f"  {GOOD}\n", endpoint=server.url) == "alice"
    assert hub.current_token() == GOOD


def test_the_token_never_appears_in_output(server, tmp_path, caplog, toy_model_dir):
    caplog.set_level(logging.DEBUG)
    messages = []
    for token in (GOOD, NO_LICENCE, "hf_not_a_real_token_at_all"):
        try:
            hub.download(REPO, cache_dir=tmp_path / token, endpoint=server.url, token=token)
        except hub.HubError as e:
            messages.append(str(e))
    env = {**os.environ, "HF_ENDPOINT": server.url, "HF_TOKEN": GOOD, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    cli = subprocess.run([sys.executable, "-m", "vlm_core", "download", REPO], capture_output=True, text=True,
                         env=env, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert f"Bearer {GOOD}" in server.state.auth_seen  # it was used...
    for token in (GOOD, NO_LICENCE, "hf_not_a_real_token_at_all"):  # ...and never shown
        assert token not in caplog.text and token not in cli.stdout + cli.stderr
        assert not any(token in m for m in messages)


def test_cli_download_then_generate_by_repo_id(server, tmp_path, photos):
    env = {**os.environ, "HF_ENDPOINT": server.url, "HF_TOKEN": GOOD, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    out = subprocess.run([sys.executable, "-m", "vlm_core", "download", REPO], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "100.0%" in out.stderr and out.stdout.strip().endswith(COMMIT)
    gen = subprocess.run([sys.executable, "-m", "vlm_core", "generate", "--model", REPO, "--image", str(photos[0]),
                          "--prompt", "ocr", "--max-new-tokens", "3", "--json"], capture_output=True, text=True,
                         env={**env, "HF_ENDPOINT": "http://127.0.0.1:9"}, timeout=120)
    assert gen.returncode == 0, gen.stderr
    down = subprocess.run([sys.executable, "-m", "vlm_core", "download", "google/nope"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert down.returncode == 1 and down.stderr.startswith("error: google/nope was not found")


def test_catalogue_sizes_match_the_architecture():
    import torch

    from vlm_core.weights.catalog import CATALOG
    from vlm_core.model.paligemma import PaliGemma

    for spec in CATALOG:
        with torch.device("meta"):
            model = PaliGemma(spec.config)
        assert sum(p.numel() for p in model.parameters()) == spec.parameters
    assert len(CATALOG) == 6 + 9 + 2 + 3  # PaliGemma 2 mix, pt, DOCCI; PaliGemma 1 mix
    three = next(m for m in CATALOG if m.repo_id == "google/paligemma2-3b-mix-224")
    assert 6.0e9 < three.download_bytes < 6.2e9  # the Hub lists 6.07 GB for this repository's files
    pg1 = next(m for m in CATALOG if m.repo_id == "google/paligemma-3b-mix-224")
    assert pg1.config.text.family == "gemma" and pg1.title == "PaliGemma (1) 3B mix 224px"
    assert 11.6e9 < pg1.download_bytes < 11.8e9  # float32 files: 11.7 GB


def test_every_failure_has_its_own_explanation():
    import errno
    import ssl

    import httpx2

    request = httpx2.Request("GET", "https://huggingface.co/x")
    proxy = hub.explain(httpx2.ProxyError("407 Proxy Authentication Required", request=request), REPO)
    assert proxy.kind == "proxy_tls" and "proxy" in str(proxy)
    tls = httpx2.ConnectError("handshake failed", request=request)
    tls.__cause__ = ssl.SSLCertVerificationError("CERTIFICATE_VERIFY_FAILED")
    assert hub.explain(tls, REPO).kind == "proxy_tls" and "certificates" in str(hub.explain(tls, REPO))
    down = hub.explain(httpx2.ConnectError("Connection refused", request=request), REPO)
    assert down.kind == "network"
    full = hub.explain(OSError(errno.ENOSPC, "No space left on device"), REPO)
    assert full.kind == "disk_full" and "resumes" in str(full)
    other = hub.explain(RuntimeError("hf_secret_token_in_a_message"), REPO)
    assert other.kind == "other" and "hf_secret" not in str(other)


def test_transient_failures_are_retried_and_resume_from_the_bytes_on_disk(server, tmp_path):
    """A 500, a 429 with Retry-After and dropped connections, on the repository info, a HEAD and the bytes: the
    download still completes, every byte fetched once."""
    shard = shard_names(server)[0]
    server.state.faults.update({"api": [503, "drop"], "HEAD config.json": [500],
                                "config.json": [500, 429, "drop"], shard: [502]})
    server.state.drop_after[shard] = 1000  # then, mid-file, the connection goes
    path = fetch(server, tmp_path)
    files = server.state.repos[REPO].files
    assert all((path / n).read_bytes() == d for n, d in files.items())
    assert server.state.served == {n: len(d) for n, d in files.items()}  # resumed, never refetched
    assert ("GET", f"/{REPO}/resolve/{COMMIT}/{shard}", "bytes=1000-") in server.state.log
    assert not any(server.state.faults.values())  # every fault was met


def test_failures_that_persist_end_with_one_line_after_the_progress_bar(server, tmp_path):
    server.state.faults["config.json"] = [500] * 20
    env = {**os.environ, "HF_ENDPOINT": server.url, "HF_TOKEN": GOOD, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    cli = subprocess.run([sys.executable, "-m", "vlm_core", "download", REPO], capture_output=True, text=True,
                         env=env, timeout=300)
    assert cli.returncode == 1
    gets = [p for m, p, _ in server.state.log if m == "GET" and p.endswith("/config.json")]
    assert len(gets) == 5  # tried a few times, then gave up
    last = cli.stderr.rstrip("\n").split("\n")[-1]
    assert last == "error: The Hub had a server error (500); try again in a few minutes.", cli.stderr[-500:]
    assert "Traceback" not in cli.stderr
    for said in ("error: ", "download of "):  # the error and each retry notice start a line of their own
        assert said in cli.stderr and not re.search(f"[^\n]{said}", cli.stderr), cli.stderr[-800:]


def test_a_file_served_damaged_is_refused_and_one_damaged_on_disk_is_fetched_again(server, tmp_path):
    real = server.state.repos[REPO].files["config.json"]
    server.state.wrong_bytes["config.json"] = real.replace(b"{", b"[", 1)  # same size, right ETag, wrong bytes
    with pytest.raises(hub.HubError, match="config.json arrived damaged") as err:
        fetch(server, tmp_path)
    assert err.value.kind == "corrupt"
    assert hub.find_installed(REPO, tmp_path / "models") is None

    del server.state.wrong_bytes["config.json"]
    path = fetch(server, tmp_path)
    assert (path / "config.json").read_bytes() == real and hub.damaged_files(path) == []
    blob = (path / "config.json").resolve()
    blob.write_bytes(real.replace(b"{", b"[", 1))  # damaged on disk later (or installed by an older version)
    shard = (path / shard_names(server)[0]).resolve()
    with open(shard, "r+b") as f:
        f.seek(100)
        f.write(b"\0\0\0\0")
    seen = []  # (bytes hashed, bytes in all), as the app's Models dialog shows it
    assert hub.damaged_files(path, lambda done, total: seen.append((done, total))) == [
        "config.json", shard_names(server)[0]]
    total = sum(p.resolve().stat().st_size for p in path.iterdir())
    assert seen[-1] == (total, total) and [d for d, _ in seen] == sorted(d for d, _ in seen)

    before = len(server.state.log)
    assert fetch(server, tmp_path) == path  # `download` checks what is there and fetches only what is wrong
    again = sorted(p.rsplit("/", 1)[1] for m, p, _ in server.state.log[before:] if m == "GET" and "/resolve/" in p)
    assert again == sorted(["config.json", shard_names(server)[0]])
    assert (path / "config.json").read_bytes() == real and hub.damaged_files(path) == []
    assert hub.unchecked_files(path) == []

    # A copy instead of a link (Windows without symlinks) has no checksum in its name: it is reported as unchecked,
    # never as intact (the Models dialog says so).
    config = path / "config.json"
    data = config.read_bytes()
    config.unlink()
    config.write_bytes(data)
    assert hub.unchecked_files(path) == ["config.json"] and "config.json" not in hub.damaged_files(path)
    from desktop_app.views.model_files import found_words
    assert "could not be checked" in found_words([], ["config.json"])
    assert "Every file matches" not in found_words([], ["config.json"])
