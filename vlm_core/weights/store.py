"""The model store's items, downloaded alike: a PaliGemma model (weights/hub.py) or the mask decoder (weights/vae.py).

One entry point so the app's download job and dialog, and the `download` command, fetch either by its repo id.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from . import hub, vae


def download(repo_id: str, cache_dir: Path | None = None, token: str | None = None, endpoint: str | None = None,
             progress: Callable[[hub.Progress], None] | None = None,
             should_stop: Callable[[], bool] = lambda: False) -> Path:
    """A model's snapshot folder, or for the mask decoder's Space (vae.MASK_DECODER_REPO) the decoder file."""
    if repo_id == vae.MASK_DECODER_REPO:
        if hub.is_offline():
            raise hub.explain(hub.offline_error(), repo_id)
        return vae.download_mask_decoder(Path(cache_dir or hub.default_cache_dir()), token=token, endpoint=endpoint,
                                         progress=progress, should_stop=should_stop)
    return hub.download(repo_id, cache_dir, token, endpoint, progress, should_stop)
