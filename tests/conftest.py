"""Shared fixtures: toy checkpoints in the Hub's layout, generated once per session, and real photos.

Nothing here touches the network: checkpoints are written by vlm_core.toy, photos come from scikit-image's wheel.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test that forgets HF_ENDPOINT must fail, not reach the Hub

from vlm_core import toy  # noqa: E402


def photo_dir() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("scikit-image is needed for its sample photos: pip install -e '.[test]'")
    return Path(spec.submodule_search_locations[0]) / "data"


PHOTOS = ("chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg")


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
