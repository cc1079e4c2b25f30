"""The local cache, in huggingface_hub's layout (blobs/<etag>, snapshots/<commit>/<file> linking into blobs,
refs/main), so the Hugging Face tools see our downloads and we see theirs: where it is, what is installed, how big,
and how to remove it. Nothing here touches the network."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from ..errors import WeightsError
from .hub_errors import HubError
from .layout import checkpoint_files

_DISK_MARGIN = 200 * 2**20  # keep some room for the OS and the cache's own metadata


def default_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("paligemma-desktop", appauthor=False)) / "models"


def hf_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_cache_folder(cache_dir: Path, repo_id: str) -> Path:
    return Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))


def typed_repo_folder(cache_dir: Path, repo_id: str, repo_type: str) -> Path:
    """The cache layout's folder: models--org--name, spaces--org--name, datasets--org--name."""
    return Path(cache_dir) / (f"{repo_type}s--" + repo_id.replace("/", "--"))


def snapshot_if_complete(cache_dir: Path, repo_id: str) -> Path | None:
    """The cached snapshot folder if it holds a loadable model (config, tokenizer, every shard), else None."""
    folder = repo_cache_folder(cache_dir, repo_id)
    try:
        commit = (folder / "refs" / "main").read_text().strip()
    except OSError:
        return None
    snap = folder / "snapshots" / commit
    if not ((snap / "config.json").is_file() and (snap / "tokenizer.model").is_file()):
        return None
    try:
        checkpoint_files(snap)  # the index and every shard it lists, or the single file
    except (WeightsError, OSError):
        return None
    return snap


def find_installed(repo_id: str, cache_dir: Path | None = None) -> Path | None:
    """Our cache first, then the standard Hugging Face cache (HF_HOME / HF_HUB_CACHE): no second download."""
    for cache in (Path(cache_dir or default_cache_dir()), hf_cache_dir()):
        if snap := snapshot_if_complete(cache, repo_id):
            return snap
    return None


def find_cached_file(repo_id: str, filename: str, repo_type: str, cache_dirs: list[Path]) -> Path | None:
    """A complete copy of one file in any of the caches (the snapshot `refs/main` points at first, then any other
    snapshot), never touching the network."""
    for cache in cache_dirs:
        folder = typed_repo_folder(cache, repo_id, repo_type)
        try:
            main = (folder / "refs" / "main").read_text().strip()
        except OSError:
            main = ""
        snaps = sorted((folder / "snapshots").glob("*")) if (folder / "snapshots").is_dir() else []
        for snap in sorted(snaps, key=lambda p: p.name != main):
            if (snap / filename).is_file():
                return snap / filename
    return None


def disk_usage(repo_id: str, cache_dir: Path) -> int:
    folder = repo_cache_folder(cache_dir, repo_id) / "blobs"
    return sum(p.stat().st_size for p in folder.glob("*") if p.is_file()) if folder.is_dir() else 0


def delete_model(repo_id: str, cache_dir: Path) -> None:
    shutil.rmtree(repo_cache_folder(cache_dir, repo_id), ignore_errors=True)


def resolve_model(name: str, cache_dir: Path | None = None) -> Path:
    """A folder as given, or a repo id (org/name) resolved from the caches. Never touches the network."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if name.count("/") == 1 and not path.exists() and not name.startswith((".", "/", "~")):
        if snap := find_installed(name, cache_dir):
            return snap
        raise HubError("not_installed", f"{name} is not downloaded yet: run `python -m vlm_core download {name}` "
                                        "or use the model picker in the app")
    raise HubError("not_installed", f"model folder {name} does not exist")


def bytes_on_disk(blobs: Path, etag: str) -> int:
    for p in (blobs / etag, blobs / f"{etag}.incomplete"):
        if p.is_file():
            return p.stat().st_size
    return 0


def check_disk(cache_dir: Path, needed: int) -> None:
    probe = cache_dir
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed + _DISK_MARGIN:
        raise HubError("disk_full", f"Not enough disk space: the download needs {needed / 1e9:.1f} GB more, "
                                    f"{free / 1e9:.1f} GB is free in {cache_dir}. Free some space or choose another "
                                    "models folder in Settings.")


def blob_matches(path: Path, etag: str, on_read: Callable[[int], None] | None = None) -> bool | None:
    """Whether a file's bytes are the ones its ETag names: an LFS file's ETag is its SHA-256, any other file's is
    its git blob id, sha1(b"blob <size>\\0" + content). None when the ETag is neither (nothing to check against).
    `on_read(n)` is told each chunk's size as it is hashed."""
    etag = etag.lower()
    if any(c not in "0123456789abcdef" for c in etag) or len(etag) not in (40, 64):
        return None
    digest = hashlib.sha256() if len(etag) == 64 else hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(8 * 2**20):
            digest.update(chunk)
            if on_read is not None:
                on_read(len(chunk))
    return digest.hexdigest() == etag


def usable_blob(blobs: Path, etag: str, size: int | None) -> bool:
    """blobs/<etag> is there with the right size and hash. A wrong one (damaged on disk, or installed damaged
    before every file was checked) is removed, so the download fetches it again."""
    blob = blobs / etag
    if not blob.is_file():
        return False
    if (size is None or blob.stat().st_size == size) and blob_matches(blob, etag) is not False:
        return True
    blob.unlink()
    return False


def damaged_files(snapshot: Path, progress: Callable[[int, int], None] | None = None) -> list[str]:
    """The files of an installed snapshot whose blob does not match its name (a repair downloads them again).
    Files stored as copies (no link to a blob, e.g. on Windows without symlinks) have no name to check against.
    `progress(bytes hashed, bytes in all)` is called as the hashing goes; it may raise to stop it."""
    links = []
    for path in sorted(p for p in Path(snapshot).rglob("*") if p.is_symlink() or p.is_file()):
        target = Path(os.path.realpath(path))
        if path.is_symlink() and target.parent.name == "blobs":
            links.append((path, target))
    total = sum(t.stat().st_size for _, t in links if t.is_file())
    done = 0

    def read(n: int) -> None:
        nonlocal done
        done += n
        progress(done, total)

    bad = []
    for path, target in links:
        if not target.is_file() or blob_matches(target, target.name, read if progress else None) is False:
            bad.append(path.relative_to(snapshot).as_posix())
    return bad


def unchecked_files(snapshot: Path) -> list[str]:
    """The files of a snapshot that are copies rather than links to a blob (Windows without symlinks): no name to
    check them against, so damaged_files cannot say whether they are intact."""
    return [p.relative_to(snapshot).as_posix() for p in sorted(Path(snapshot).rglob("*"))
            if p.is_file() and not (p.is_symlink() and Path(os.path.realpath(p)).parent.name == "blobs")]


def link(blob: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    try:
        dest.symlink_to(os.path.relpath(blob, dest.parent))
    except OSError:  # Windows without developer mode: a copy, as huggingface_hub does
        shutil.copyfile(blob, dest)
