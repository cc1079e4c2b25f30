"""The mask decoder's weights in the model store: `vae-oid.npz` from the public Hugging Face Space
`big-vision/paligemma-hf` (Google's PaliGemma demo; not gated, no token needed).

Downloaded once, when first needed or when the app offers it, into our models folder in the Hub's cache layout
(spaces--big-vision--paligemma-hf/...), resumable and with progress like a model. Found afterwards without the
network, in our folder or in the standard Hugging Face cache (a copy `hf download --repo-type space` made is reused).
Every copy found or fetched must be the official file (size and SHA-256); a `--vae PATH` file is taken as given
(only its layout is checked), so a fine-tuned decoder works too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from ..errors import WeightsError
from . import hub

OFFICIAL_FILENAME = "vae-oid.npz"
OFFICIAL_SIZE = 8_479_556
OFFICIAL_SHA256 = "5586010257b8536dddefab65e7755077f21d5672d5674dacf911f73ae95a4447"

MASK_DECODER_REPO = "big-vision/paligemma-hf"
MASK_DECODER_REPO_TYPE = "space"
MASK_DECODER_TITLE = "PaliGemma mask decoder (vae-oid.npz, 8.5 MB)"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * 2**20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_official(path: Path) -> None:
    """Raise unless `path` is byte for byte Google's vae-oid.npz."""
    path = Path(path)
    size = path.stat().st_size
    if size != OFFICIAL_SIZE or file_sha256(path) != OFFICIAL_SHA256:
        raise WeightsError(f"{path} is not Google's {OFFICIAL_FILENAME} (its size or SHA-256 differs; it may be "
                           "damaged). Delete it and download the mask decoder again.")


def find_mask_decoder(cache_dir: Path | None = None) -> Path | None:
    """An official-size copy in our models folder or the Hugging Face cache; no network. (The SHA-256 is checked
    when it is loaded: load_decoder(path, official=True).)"""
    caches = [Path(cache_dir or hub.default_cache_dir()), hub.hf_cache_dir()]
    path = hub.find_cached_file(MASK_DECODER_REPO, OFFICIAL_FILENAME, MASK_DECODER_REPO_TYPE, caches)
    return path if path is not None and path.stat().st_size == OFFICIAL_SIZE else None


def download_mask_decoder(cache_dir: Path | None = None, token: str | None = None, endpoint: str | None = None,
                          progress: Callable[[hub.Progress], None] | None = None,
                          should_stop: Callable[[], bool] = lambda: False,
                          expected_sha256: str | None = None) -> Path:
    """Fetch vae-oid.npz (resuming a partial copy) and check it is the file big_vision's code was written for
    (OFFICIAL_SHA256 unless told otherwise)."""
    expected_sha256 = expected_sha256 or OFFICIAL_SHA256
    if existing := find_mask_decoder(cache_dir):
        if file_sha256(existing) == expected_sha256:
            return existing
    path = hub.download_file(MASK_DECODER_REPO, OFFICIAL_FILENAME, MASK_DECODER_REPO_TYPE,
                             Path(cache_dir or hub.default_cache_dir()), token=token, endpoint=endpoint,
                             progress=progress, should_stop=should_stop)
    if file_sha256(path) != expected_sha256:
        blob = path.resolve()
        path.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)
        raise hub.HubError("corrupt", f"The {OFFICIAL_FILENAME} in {MASK_DECODER_REPO} is not the file this app "
                                      "was built for (its SHA-256 differs), so it was discarded. Get the official "
                                      "file and pass it with --vae PATH.")
    return path


def resolve_mask_decoder(vae: str | Path | None = None, cache_dir: Path | None = None,
                         download_if_missing: bool = False,
                         progress: Callable[[hub.Progress], None] | None = None) -> tuple[Path, bool]:
    """(path, official): `vae` as given, else the store's copy, else (if allowed) a download. `official` says the
    loader should insist on the official checksum."""
    if vae is not None:
        path = Path(vae).expanduser()
        if not path.is_file():
            raise hub.HubError("not_installed", f"mask decoder file {path} does not exist")
        return path, False
    if found := find_mask_decoder(cache_dir):
        return found, True
    if download_if_missing and not hub.is_offline():
        return download_mask_decoder(cache_dir, progress=progress), True
    raise hub.HubError("not_installed", f"The mask decoder ({OFFICIAL_FILENAME}) is not downloaded yet: run "
                                        "`python -m vlm_core objects ...` once online, use Download in the app, "
                                        "or pass --vae PATH.")


def load_store_decoder(vae: str | Path | None = None, cache_dir: Path | None = None,
                       download_if_missing: bool = False, progress=None):
    """The MaskDecoder from --vae or the store (imports torch)."""
    path, official = resolve_mask_decoder(vae, cache_dir, download_if_missing, progress)
    return load_decoder(path, official=official)


def load_decoder(path: str | Path, official: bool = False):
    """The MaskDecoder in `path` (imports torch). `official=True` (the store's copy) also requires the official
    file's SHA-256; a file given with --vae only needs the decoder's layout."""
    from ..model.vqvae import load_mask_decoder

    if official:
        verify_official(Path(path))
    return load_mask_decoder(path)
