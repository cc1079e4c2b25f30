"""PaliGemma 2 weights from the Hugging Face Hub into a local cache: find, download, resume, explain failures.

Everything network-facing goes through huggingface_hub: repository info (HfApi.model_info), file metadata
(get_hf_file_metadata), authentication headers, its HTTP session (proxies, user agent, offline mode) and its error
classes. Every file is verified, on arrival and when it is found already there: an LFS file by its SHA-256, any
other by its git blob id (both are the ETag), so a damaged file is fetched again instead of installed for good.
This module is the entry point and the download plan; the concerns live beside it:
  hub_auth   the endpoint, offline mode and the access token;
  hub_cache  the cache layout (blobs/, snapshots/<commit>/, refs/) and what is installed;
  hub_fetch  the byte-range downloader that resumes partial files and verifies them;
  hub_errors HubError and the one-line explanation of every failure.
Callers use `hub.<name>` for all of them.

The token is never part of a message, a log line or an exception text produced here.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from .hub_auth import check_and_save_token, current_token, endpoint_url, is_offline
from .hub_cache import (bytes_on_disk, check_disk, damaged_files, default_cache_dir, delete_model, disk_usage,
                        find_cached_file, find_installed, hf_cache_dir, link, repo_cache_folder, resolve_model,
                        snapshot_if_complete, typed_repo_folder, unchecked_files, usable_blob)
from .hub_errors import DownloadCancelled, HubError, explain, offline_error
from .hub_fetch import Progress, Tracker, fetch, verify, with_retries

__all__ = ["REQUIRED_PATTERNS", "DownloadCancelled", "HubError", "Progress", "check_and_save_token", "current_token",
           "damaged_files", "default_cache_dir", "delete_model", "disk_usage", "download", "download_file",
           "endpoint_url", "explain", "find_cached_file", "find_installed", "hf_cache_dir", "is_offline",
           "offline_error", "repo_cache_folder", "resolve_model", "snapshot_if_complete", "typed_repo_folder",
           "unchecked_files"]

REQUIRED_PATTERNS = ("config.json", "tokenizer.model", "model.safetensors", "model.safetensors.index.json",
                     "model-*-of-*.safetensors", "preprocessor_config.json", "generation_config.json")


def download(repo_id: str, cache_dir: Path | None = None, token: str | None = None, endpoint: str | None = None,
             progress: Callable[[Progress], None] | None = None,
             should_stop: Callable[[], bool] = lambda: False) -> Path:
    """Fetch the files a PaliGemma 2 model needs into `cache_dir` (resuming partial files); returns the snapshot.
    (weights/store.download also takes the mask decoder's id.)"""
    cache_dir = Path(cache_dir or default_cache_dir())
    if is_offline():
        raise explain(offline_error(), repo_id)
    try:
        return _download(repo_id, cache_dir, token, endpoint or endpoint_url(), progress, should_stop)
    except HubError:
        raise
    except Exception as e:  # noqa: BLE001 - every failure becomes an explanation
        raise explain(e, repo_id) from None


def _download(repo_id, cache_dir, token, endpoint, report, should_stop) -> Path:
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url

    token = token or current_token()
    info = with_retries(lambda: HfApi(endpoint=endpoint).model_info(repo_id, revision="main", files_metadata=True,
                                                                      token=token or False))
    commit = info.sha
    files = {s.rfilename: s.size for s in info.siblings or []
             if any(fnmatch.fnmatch(s.rfilename, p) for p in REQUIRED_PATTERNS)}
    if "config.json" not in files or "tokenizer.model" not in files:
        raise HubError("not_found", f"{repo_id} does not look like a PaliGemma 2 model (no config.json or "
                                    "tokenizer.model); pick one from the list")

    folder = repo_cache_folder(cache_dir, repo_id)
    blobs, snap = folder / "blobs", folder / "snapshots" / commit
    blobs.mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    metas = {}
    for name in sorted(files):
        url = hf_hub_url(repo_id, name, revision=commit, endpoint=endpoint)
        metas[name] = with_retries(lambda u=url: get_hf_file_metadata(u, token=token or False, endpoint=endpoint,
                                                                       retry_on_errors=True))
    sizes = {n: m.size or files[n] or 0 for n, m in metas.items()}
    for n, m in metas.items():
        usable_blob(blobs, m.etag, sizes[n])  # what is there already is checked (size, then hash); wrong goes
    have = {n: bytes_on_disk(blobs, metas[n].etag) for n in metas}
    check_disk(cache_dir, sum(sizes.values()) - sum(min(have[n], sizes[n]) for n in sizes))

    tracker = Tracker(sum(sizes.values()), sum(min(have[n], sizes[n]) for n in sizes), report, should_stop)
    for name, meta in metas.items():
        _fetch_blob(meta, name, sizes[name], min(have[name], sizes[name]), blobs, token, endpoint, tracker)
        link(blobs / meta.etag, snap / name)
        tracker.finish_file()
    refs = folder / "refs"
    refs.mkdir(exist_ok=True)
    (refs / "main").write_text(commit)
    if (done := snapshot_if_complete(cache_dir, repo_id)) is None:
        raise HubError("not_found", f"{repo_id} downloaded, but its files do not make a complete model")
    return done


def _fetch_blob(meta, name: str, size: int, have: int, blobs: Path, token, endpoint: str, tracker: Tracker) -> None:
    """blobs/<etag> for one file, fetched into its .incomplete partial and verified unless it is there already."""
    from huggingface_hub.utils import build_hf_headers

    headers = build_hf_headers(token=token or False)
    if urlsplit(meta.location).netloc != urlsplit(endpoint).netloc:
        headers.pop("authorization", None)  # a signed CDN address: the token stays with the Hub
    blob = blobs / meta.etag
    tracker.start_file(name, size, have)
    if not blob.is_file():
        partial = blobs / f"{meta.etag}.incomplete"
        fetch(meta.location, partial, size, headers, tracker)
        verify(partial, meta.etag, name)
        os.replace(partial, blob)


# -- single files from any repository type (the mask decoder lives in a Space) --------------------------------------
def download_file(repo_id: str, filename: str, repo_type: str, cache_dir: Path, token: str | None = None,
                  endpoint: str | None = None, progress: Callable[[Progress], None] | None = None,
                  should_stop: Callable[[], bool] = lambda: False) -> Path:
    """One file of a repository into the cache layout, resumable and checksum-verified like a model's shards.
    Public repositories need no token; one is sent if there is one (a gated or private repository needs it)."""
    if is_offline():
        raise explain(offline_error(), repo_id)
    try:
        return _download_file(repo_id, filename, repo_type, Path(cache_dir), token, endpoint or endpoint_url(),
                              progress, should_stop)
    except HubError:
        raise
    except Exception as e:  # noqa: BLE001 - every failure becomes an explanation
        raise explain(e, repo_id) from None


def _download_file(repo_id, filename, repo_type, cache_dir, token, endpoint, report, should_stop) -> Path:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    token = token or current_token()
    url = hf_hub_url(repo_id, filename, repo_type=repo_type, revision="main", endpoint=endpoint)
    meta = with_retries(lambda: get_hf_file_metadata(url, token=token or False, endpoint=endpoint,
                                                     retry_on_errors=True))
    folder = typed_repo_folder(cache_dir, repo_id, repo_type)
    blobs, snap = folder / "blobs", folder / "snapshots" / (meta.commit_hash or "main")
    blobs.mkdir(parents=True, exist_ok=True)
    size = meta.size or 0
    usable_blob(blobs, meta.etag, size)
    have = bytes_on_disk(blobs, meta.etag)
    check_disk(cache_dir, size - min(have, size))
    tracker = Tracker(size, min(have, size), report, should_stop)
    _fetch_blob(meta, filename, size, min(have, size), blobs, token, endpoint, tracker)
    link(blobs / meta.etag, snap / filename)
    tracker.finish_file()
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(snap.name)
    return snap / filename
