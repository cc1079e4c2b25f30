"""Shared fixtures: toy checkpoints in the Hub's layout, generated once per session, and real photos.

Nothing here touches the network: checkpoints are written by vlm_core.weights.toy, photos come from scikit-image's wheel.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Before anything imports huggingface_hub (it reads these once): a private HF home (token file, cache), no token
# from the environment, and an endpoint nobody listens on, so a test that forgets its local Hub fails at once
# instead of reaching the real one.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="pgd-hf-home-")
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="pgd-cache-")
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="pgd-config-")  # the app's QSettings, for subprocesses too
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="pgd-data-")  # the app's history, never the real one
os.environ.pop("HF_TOKEN", None)
os.environ.pop("HF_HUB_OFFLINE", None)
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"

from vlm_core.weights import toy  # noqa: E402


def photo_dir() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("scikit-image is needed for its sample photos: pip install -e '.[test]'")
    return Path(spec.submodule_search_locations[0]) / "data"


PHOTOS = ("chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg")


@pytest.fixture(autouse=True)
def private_history(tmp_path, monkeypatch):
    """Each test's windows keep their history apart (platformdirs reads XDG_DATA_HOME on every call): a picture
    another test asked about is not a conversation to continue."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    return [photo_dir() / name for name in PHOTOS]


@pytest.fixture(scope="session")
def tokenizer_model() -> bytes:
    return toy.train_tokenizer()


@pytest.fixture(scope="session")
def make_checkpoint(tmp_path_factory, tokenizer_model):
    """Factory: make_checkpoint(**write_checkpoint kwargs) -> folder, cached per distinct kwargs."""
    made: dict[tuple, Path] = {}

    def make(**kwargs) -> Path:
        key = tuple(sorted((k, repr(v)) for k, v in kwargs.items()))
        if key not in made:
            folder = tmp_path_factory.mktemp("toy")
            made[key] = toy.write_checkpoint(folder, tokenizer_model=tokenizer_model, **kwargs)
        return made[key]

    return make


@pytest.fixture(scope="session")
def toy_model_dir(make_checkpoint) -> Path:
    """The default toy: Hub spelling, two shards, float32."""
    return make_checkpoint()
