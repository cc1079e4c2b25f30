"""The mask decoder through the model store (against tests/hub_server.py on loopback), and the `objects` CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vlm_core.cli import main
from vlm_core.model.vqvae import load_mask_decoder
from vlm_core.runtime.answers import parse_objects
from vlm_core.weights import hub, store, vae

from .hub_server import COMMIT, HubServer, Repo
from .test_masks import evaluator_mask
from .vae_fixture import write_random_vae

PATH_IN_SPACE = f"/spaces/{vae.MASK_DECODER_REPO}/resolve/main/{vae.OFFICIAL_FILENAME}"


@pytest.fixture(scope="module")
def vae_file(tmp_path_factory):
    return write_random_vae(tmp_path_factory.mktemp("vae") / "vae-oid.npz", seed=3)


@pytest.fixture
def server(vae_file):
    with HubServer() as s:
        s.state.spaces[vae.MASK_DECODER_REPO] = Repo({vae.OFFICIAL_FILENAME: vae_file.read_bytes()})
        yield s


def fetch(server, tmp_path, vae_file, **kw):
    return vae.download_mask_decoder(tmp_path / "models", endpoint=server.url,
                                     expected_sha256=vae.file_sha256(vae_file), **kw)


def test_download_with_progress_then_offline(server, tmp_path, vae_file, monkeypatch):
    seen = []
    path = fetch(server, tmp_path, vae_file, progress=seen.append)
    assert path == (tmp_path / "models" / "spaces--big-vision--paligemma-hf" / "snapshots" / COMMIT /
                    "vae-oid.npz")
    assert path.read_bytes() == vae_file.read_bytes()
    assert seen[-1].done == seen[-1].total == vae.OFFICIAL_SIZE and seen[-1].filename == "vae-oid.npz"
    assert server.state.served == {"vae-oid.npz": vae.OFFICIAL_SIZE}
    assert server.state.log[0][:2] == ("HEAD", PATH_IN_SPACE)  # the Space's address, not a model's

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # afterwards: found without the network
    assert vae.find_mask_decoder(tmp_path / "models") == path
    assert vae.resolve_mask_decoder(None, tmp_path / "models") == (path, True)
    before = len(server.state.log)
    assert fetch(server, tmp_path, vae_file) == path
    assert len(server.state.log) == before


def test_a_dropped_connection_resumes(server, tmp_path, vae_file):
    server.state.drop_after["vae-oid.npz"] = 100_000
    path = fetch(server, tmp_path, vae_file)
    assert path.read_bytes() == vae_file.read_bytes()
    assert server.state.served["vae-oid.npz"] == vae.OFFICIAL_SIZE  # nothing fetched twice
    assert any(r == "bytes=100000-" for _, _, r in server.state.log)


def test_a_file_that_is_not_the_official_one_is_discarded(server, tmp_path):
    with pytest.raises(hub.HubError, match="not the file this app was built for") as e:
        vae.download_mask_decoder(tmp_path / "models", endpoint=server.url)  # the real checksum
    assert e.value.kind == "corrupt"
    assert vae.find_mask_decoder(tmp_path / "models") is None
    assert not list((tmp_path / "models").rglob("*.npz")) and not [
        p for p in (tmp_path / "models").rglob("*") if p.is_file() and p.stat().st_size > 1000]


def test_the_store_job_path_and_missing_space(server, tmp_path, vae_file, monkeypatch):
    """store.download(MASK_DECODER_REPO), the call the app's download job makes, fetches the decoder file."""
    monkeypatch.setattr(vae, "OFFICIAL_SHA256", vae.file_sha256(vae_file))  # our random file plays the official
    path = store.download(vae.MASK_DECODER_REPO, cache_dir=tmp_path / "models", endpoint=server.url)
    assert path.name == "vae-oid.npz" and path.read_bytes() == vae_file.read_bytes()
    assert vae.load_store_decoder(cache_dir=tmp_path / "models") is not None  # found, checksum checked, loaded
    del server.state.spaces[vae.MASK_DECODER_REPO]
    with pytest.raises(hub.HubError) as e:
        vae.download_mask_decoder(tmp_path / "other", endpoint=server.url)
    assert e.value.kind == "not_found"


def test_reuses_a_copy_in_the_hugging_face_cache(tmp_path, vae_file, monkeypatch):
    snap = hub.hf_cache_dir() / "spaces--big-vision--paligemma-hf" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    shutil.copy(vae_file, snap / "vae-oid.npz")
    try:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        assert vae.find_mask_decoder(tmp_path / "empty-models") == snap / "vae-oid.npz"
    finally:
        shutil.rmtree(snap.parent.parent)


def test_offline_and_missing_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.HubError, match="not downloaded yet.*--vae PATH"):
        vae.resolve_mask_decoder(None, tmp_path / "models", download_if_missing=True)
    with pytest.raises(hub.HubError, match="does not exist"):
        vae.resolve_mask_decoder(tmp_path / "nope.npz")


# -- the objects command ---------------------------------------------------------------------------------------------
SEG1 = [5, 17, 99, 3, 64, 120, 7, 7, 45, 0, 127, 33, 81, 2, 60, 11]
SEG2 = [int(v) for v in np.random.default_rng(9).integers(0, 128, 16)]
ANSWER = ("<loc0060><loc0000><loc0920><loc0879>" + "".join(f"<seg{c:03d}>" for c in SEG1) + " ; "
          "<loc0100><loc0300><loc0700><loc1023> " + "".join(f"<seg{c:03d}>" for c in SEG2) + " right wheel ; "
          "<loc0500><loc0500><loc0600><loc0600> a box ; <loc0001><loc0002> cut")


@pytest.fixture
def photo(tmp_path, photos):
    path = tmp_path / "photo.png"
    Image.open(photos[0]).convert("RGB").resize((451, 301)).save(path)  # odd sizes
    return path


def test_objects_writes_masks_equal_to_the_reference(tmp_path, photo, vae_file, capsys):
    out = tmp_path / "out"
    assert main(["objects", "--answer", ANSWER, "--image", str(photo), "--vae", str(vae_file),
                 "--out-dir", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["objects"]
    assert [o["label"] for o in result] == [None, "right wheel", "a box"]
    assert result[2]["mask"] is None
    w, h = Image.open(photo).size
    checkpoint = dict(np.load(vae_file))
    from .test_vqvae import flax_reconstruct  # the reference decoder, independent of ours

    refs = flax_reconstruct(checkpoint, np.array([SEG1, SEG2]))
    for obj, ref64, locs in zip(result, refs, [(60, 0, 920, 879), (100, 300, 700, 1023)]):
        png = Image.open(obj["mask"])
        assert png.mode == "L" and png.size == (w, h)
        ours = np.asarray(png) == 255
        ref = evaluator_mask(ref64, list(locs), h, w)
        iou = (ours & ref).sum() / (ours | ref).sum()
        assert iou >= 0.99, iou
        assert 0.05 < ref.mean() < 0.95  # a real shape, not an empty or full frame
        y0, x0, y1, x1 = locs
        assert obj["box"] == [int(x0 / 1023 * w), int(y0 / 1023 * h), int(x1 / 1023 * w), int(y1 / 1023 * h)]
    annotated = Image.open(out / "annotated.png")
    assert annotated.size == (w, h) and annotated.mode == "RGB"
    assert not np.array_equal(np.asarray(annotated), np.asarray(Image.open(photo).convert("RGB")))


def test_objects_text_output_and_detections_need_no_decoder(tmp_path, photo, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text = "<loc0000><loc0000><loc0512><loc0512> cat ; <loc0512><loc0512><loc1023><loc1023> dog"
    assert main(["objects", "--answer", text, "--image", str(photo), "--out-dir", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "0. cat: x 0-225, y 0-150; no mask (a detection)" in out and "1. dog" in out
    assert (tmp_path / "o" / "annotated.png").is_file() and not list((tmp_path / "o").glob("mask-*"))
    assert main(["objects", "--answer", "a cat", "--image", str(photo)]) == 0
    assert "no objects" in capsys.readouterr().out


def test_objects_errors_are_one_line(tmp_path, photo, vae_file):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    seg = "".join(f"<seg{c:03d}>" for c in SEG1)

    def run(*args):
        return subprocess.run([sys.executable, "-m", "vlm_core", "objects", *args], capture_output=True,
                              text=True, env=env)

    r = run("--answer", "<loc0000><loc0000><loc0512><loc0512>" + seg, "--image", str(photo),
            "--out-dir", str(tmp_path / "o"))
    assert r.returncode == 1 and "not downloaded yet" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "bad.npz").write_bytes(b"junk")
    r = run("--answer", "<loc0000><loc0000><loc0512><loc0512>" + seg, "--image", str(photo),
            "--out-dir", str(tmp_path / "o"), "--vae", str(tmp_path / "bad.npz"))
    assert r.returncode == 1 and "not a readable .npz" in r.stderr and "Traceback" not in r.stderr
    r = run("--answer", "x", "--image", str(tmp_path / "missing.png"))
    assert r.returncode == 1 and "does not exist" in r.stderr


def test_generate_json_lists_objects(toy_model_dir, photo, capsys, monkeypatch):
    """The toy model's answer is noise; the objects come from a known answer routed through the same code."""
    from vlm_core.runtime import engine as engine_mod
    from vlm_core.runtime.generate import TokenEvent

    real_stream = engine_mod.Engine.stream

    def stream(self, image, prompt, params, **kwargs):
        events = list(real_stream(self, image, prompt, params))
        return [TokenEvent(None, "<loc0000><loc0000><loc0512><loc0512> cat"), events[-1]]

    monkeypatch.setattr(engine_mod.Engine, "stream", stream)
    assert main(["generate", "--model", str(toy_model_dir), "--image", str(photo), "--prompt", "detect cat",
                 "--max-new-tokens", "2", "--json", "--device", "cpu"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["objects"] == [{"label": "cat", "box": [0, 0, 225, 150], "mask": None}]
    assert parse_objects(payload["text"], 451, 301)[0].pixel_box == (0, 0, 225, 150)


def test_loaded_store_decoder_is_the_downloaded_file(server, tmp_path, vae_file):
    path = fetch(server, tmp_path, vae_file)
    dec = load_mask_decoder(path)
    np.testing.assert_array_equal(dec._vq_vae._embedding.detach().numpy(), np.load(vae_file)["_vq_vae._embedding"])
