"""PaliGemma 2 weights from the Hugging Face Hub into a local cache: find, download, resume, explain failures.

Everything network-facing goes through huggingface_hub: repository info (HfApi.model_info), file metadata
(get_hf_file_metadata), authentication headers, its HTTP session (proxies, user agent, offline mode) and its error
classes. One loop is ours (_fetch): huggingface_hub deletes a partial file when a download fails and buffers 10 MB
chunks, so an interrupted 5 GB shard would start over. We keep partial files as `blobs/<etag>.incomplete`, write each
chunk as it arrives and resume with a Range request from the file's length, so a dropped connection, a cancel, a
crash or a restart never fetches a byte twice. Finished files land in the standard cache layout (blobs/, snapshots/<commit>/, refs/),
so the Hugging Face tools see them and we see theirs.

The token is never part of a message, a log line or an exception text produced here.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import VlmError, WeightsError
from .layout import checkpoint_files

REQUIRED_PATTERNS = ("config.json", "tokenizer.model", "model.safetensors", "model.safetensors.index.json",
                     "model-*-of-*.safetensors", "preprocessor_config.json", "generation_config.json")
log = logging.getLogger(__name__)
_DISK_MARGIN = 200 * 2**20  # keep some room for the OS and the cache's own metadata


class HubError(VlmError):
    """A download problem with its own explanation and next step. `kind` lets the app react (e.g. ask for a token)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class DownloadCancelled(HubError):
    def __init__(self):
        super().__init__("cancelled", "The download was cancelled; what was fetched is kept and it resumes next time.")


@dataclass(frozen=True)
class Progress:
    filename: str
    file_done: int
    file_total: int
    done: int  # bytes on disk for the whole model, resumed bytes included
    total: int
    bytes_per_s: float  # over the last few seconds
    eta_s: float | None


def default_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("paligemma-desktop", appauthor=False)) / "models"


def hf_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def endpoint_url() -> str:
    """HF_ENDPOINT as it is now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def is_offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def repo_cache_folder(cache_dir: Path, repo_id: str) -> Path:
    return Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))


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


# -- token -----------------------------------------------------------------------------------------------------------
def current_token() -> str | None:
    """HF_TOKEN, or the token file that `hf auth login` writes."""
    from huggingface_hub import get_token

    return get_token()


def check_and_save_token(token: str, endpoint: str | None = None) -> str:
    """Validate a pasted token against the server and save it where huggingface_hub keeps tokens; returns the
    user name. The public login() validates against the endpoint fixed at import time, so its two steps are done
    here against the configured endpoint."""
    from huggingface_hub import HfApi
    from huggingface_hub._login import _save_token, _set_active_token

    token = token.strip()
    if not token.startswith("hf_") or len(token) < 10:
        raise HubError("invalid_token", "That does not look like a Hugging Face access token (they start with hf_). "
                                        "Create one at huggingface.co/settings/tokens (Read access is enough).")
    try:
        info = HfApi(endpoint=endpoint or endpoint_url()).whoami(token=token, cache=False)
    except Exception as e:  # noqa: BLE001 - mapped to a message below
        raise explain(e, None) from None
    name = ((info.get("auth") or {}).get("accessToken") or {}).get("displayName") or f"paligemma-desktop-{info['name']}"
    _save_token(token=token, token_name=name)
    _set_active_token(token_name=name, add_to_git_credential=False)
    return info["name"]


# -- errors ----------------------------------------------------------------------------------------------------------
def _http_module():
    """huggingface_hub 2.x speaks through httpx2; 1.x used httpx. Their exception classes are what we map."""
    try:
        import httpx2 as http
    except ImportError:  # pragma: no cover - older huggingface_hub
        import httpx as http
    return http


def explain(error: BaseException, repo_id: str | None) -> HubError:
    """One explanation and next step per failure; never the token, never a traceback."""
    httpx = _http_module()
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled, RemoteEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    page = f"https://huggingface.co/{repo_id}" if repo_id else "https://huggingface.co"
    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, HubError):
        return error
    if isinstance(error, GatedRepoError):
        if status == 401:
            return HubError("not_logged_in", f"{repo_id} is a gated model: sign in with a Hugging Face access token "
                                             "first (huggingface.co/settings/tokens, Read access).")
        return HubError("licence", f"Your Hugging Face account has not accepted the Gemma licence for {repo_id} yet. "
                                   f"Open {page}, accept the licence, then try again.")
    if isinstance(error, RepositoryNotFoundError):
        return HubError("not_found", f"{repo_id} was not found on the Hub (check the name; private models need a "
                                     "token with access).")
    if isinstance(error, (RemoteEntryNotFoundError, RevisionNotFoundError)):
        return HubError("not_found", f"A file of {repo_id} is missing on the Hub; the repository may have changed. "
                                     "Try again later.")
    if isinstance(error, OfflineModeIsEnabled):
        return HubError("offline", f"Offline mode is on (HF_HUB_OFFLINE), and {repo_id or 'this model'} needs a "
                                   "connection to download. Unset HF_HUB_OFFLINE or use an installed model.")
    if isinstance(error, HfHubHTTPError) and status == 401:
        return HubError("invalid_token", "The Hugging Face token was refused (expired or revoked?). "
                                         "Paste a new one from huggingface.co/settings/tokens.")
    if isinstance(error, httpx.ProxyError) or "proxy" in str(error).lower():
        return HubError("proxy_tls", "The proxy refused or failed the connection to the Hub. Check HTTPS_PROXY "
                                     "and your proxy settings.")
    if _is_tls_error(error):
        return HubError("proxy_tls", "A secure (TLS) connection to the Hub could not be made; a proxy or firewall may "
                                     "be intercepting it. Check the system's certificates or REQUESTS_CA_BUNDLE.")
    if isinstance(error, (httpx.ConnectError, httpx.TimeoutException, httpx.NetworkError, ConnectionError)):
        return HubError("network", "The Hugging Face Hub cannot be reached: check your internet connection, "
                                   "then try again. Installed models keep working offline.")
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return HubError("disk_full", "The disk is full. Free some space or choose another models folder in "
                                     "Settings; the download resumes where it stopped.")
    if isinstance(error, HfHubHTTPError) and status and status >= 500:
        return HubError("network", f"The Hub had a server error ({status}); try again in a few minutes.")
    return HubError("other", f"The download failed ({type(error).__name__}). Try again; if it keeps failing, "
                             "report it with the log.")


def _is_tls_error(error: BaseException) -> bool:
    import ssl

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(seen) or "SSL" in type(seen).__name__:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# -- download --------------------------------------------------------------------------------------------------------
class _Tracker:
    def __init__(self, total: int, done: int, report: Callable[[Progress], None] | None,
                 should_stop: Callable[[], bool]):
        self.total, self.done = total, done
        self.file, self.file_done, self.file_total = "", 0, 0
        self.report, self.should_stop = report, should_stop
        self.samples: list[tuple[float, int]] = [(time.monotonic(), done)]
        self.last_report = 0.0

    def start_file(self, name: str, size: int, already: int) -> None:
        self.file, self.file_done, self.file_total = name, already, size
        self._emit(force=True)

    def finish_file(self) -> None:
        self._emit(force=True)

    def advance(self, n: int) -> None:
        """Count bytes already written; a cancel is honoured here, after the write, so nothing is lost."""
        self.done += n
        self.file_done += n
        self._emit()
        if self.should_stop():
            raise DownloadCancelled()

    def _emit(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.report is None or (not force and now - self.last_report < 0.1):
            return
        self.last_report = now
        self.samples.append((now, self.done))
        self.samples = [s for s in self.samples if now - s[0] <= 5.0] or [self.samples[-1]]
        t0, d0 = self.samples[0]
        rate = (self.done - d0) / (now - t0) if now > t0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else None
        self.report(Progress(self.file, self.file_done, self.file_total, self.done, self.total, rate, eta))


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


def offline_error():
    from huggingface_hub.errors import OfflineModeIsEnabled

    return OfflineModeIsEnabled("offline")


def _download(repo_id, cache_dir, token, endpoint, report, should_stop) -> Path:
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    token = token or current_token()
    info = _with_retries(lambda: HfApi(endpoint=endpoint).model_info(repo_id, revision="main", files_metadata=True,
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
        metas[name] = _with_retries(lambda u=url: get_hf_file_metadata(u, token=token or False, endpoint=endpoint,
                                                                        retry_on_errors=True))
    sizes = {n: m.size or files[n] or 0 for n, m in metas.items()}
    have = {n: _bytes_on_disk(blobs, metas[n].etag) for n in metas}
    _check_disk(cache_dir, sum(sizes.values()) - sum(min(have[n], sizes[n]) for n in sizes))

    tracker = _Tracker(sum(sizes.values()), sum(min(have[n], sizes[n]) for n in sizes), report, should_stop)
    for name, meta in metas.items():
        headers = build_hf_headers(token=token or False)
        if urlsplit(meta.location).netloc != urlsplit(endpoint).netloc:
            headers.pop("authorization", None)  # a signed CDN address: the token stays with the Hub
        blob = blobs / meta.etag
        tracker.start_file(name, sizes[name], min(have[name], sizes[name]))
        if not blob.is_file():
            partial = blobs / f"{meta.etag}.incomplete"
            _fetch(meta.location, partial, sizes[name], headers, tracker)
            _verify(partial, meta.etag, name)
            os.replace(partial, blob)
        _link(blob, snap / name)
        tracker.finish_file()
    refs = folder / "refs"
    refs.mkdir(exist_ok=True)
    (refs / "main").write_text(commit)
    if (done := snapshot_if_complete(cache_dir, repo_id)) is None:
        raise HubError("not_found", f"{repo_id} downloaded, but its files do not make a complete model")
    return done


# -- single files from any repository type (the mask decoder lives in a Space) --------------------------------------
def typed_repo_folder(cache_dir: Path, repo_id: str, repo_type: str) -> Path:
    """The cache layout's folder: models--org--name, spaces--org--name, datasets--org--name."""
    return Path(cache_dir) / (f"{repo_type}s--" + repo_id.replace("/", "--"))


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
    from huggingface_hub.utils import build_hf_headers

    token = token or current_token()
    url = hf_hub_url(repo_id, filename, repo_type=repo_type, revision="main", endpoint=endpoint)
    meta = _with_retries(lambda: get_hf_file_metadata(url, token=token or False, endpoint=endpoint,
                                                      retry_on_errors=True))
    folder = typed_repo_folder(cache_dir, repo_id, repo_type)
    blobs, snap = folder / "blobs", folder / "snapshots" / (meta.commit_hash or "main")
    blobs.mkdir(parents=True, exist_ok=True)
    size, have = meta.size or 0, _bytes_on_disk(blobs, meta.etag)
    _check_disk(cache_dir, size - min(have, size))
    tracker = _Tracker(size, min(have, size), report, should_stop)
    headers = build_hf_headers(token=token or False)
    if urlsplit(meta.location).netloc != urlsplit(endpoint).netloc:
        headers.pop("authorization", None)
    blob = blobs / meta.etag
    tracker.start_file(filename, size, min(have, size))
    if not blob.is_file():
        partial = blobs / f"{meta.etag}.incomplete"
        _fetch(meta.location, partial, size, headers, tracker)
        _verify(partial, meta.etag, filename)
        os.replace(partial, blob)
    _link(blob, snap / filename)
    tracker.finish_file()
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(snap.name)
    return snap / filename


def _fetch(url: str, partial: Path, size: int, headers: dict, tracker: _Tracker, attempts: int = 5) -> None:
    """Append the missing bytes of one file to `partial`, resuming from its length, through huggingface_hub's HTTP
    session and error mapping. Not file_download.http_get: that one reads 10 MB chunks, so a dropped connection
    loses whatever was buffered, and its caller deletes the partial file on failure; here every byte received is
    on disk before the next is asked for, and a cancel lands between writes."""
    from huggingface_hub.utils import get_session, hf_raise_for_status

    httpx = _http_module()
    failures = 0
    with open(partial, "ab") as f:
        while f.tell() < size or size == 0:
            start = f.tell()
            request_headers = {**headers, "Accept-Encoding": "identity"}
            if start:
                request_headers["Range"] = f"bytes={start}-"
            try:
                with get_session().stream("GET", url, headers=request_headers, follow_redirects=True,
                                          timeout=30) as response:
                    hf_raise_for_status(response)
                    if start and response.status_code == 200:  # the server ignored Range: start over
                        f.seek(0)
                        f.truncate()
                        tracker.advance(-start)
                    for chunk in response.iter_bytes():
                        f.write(chunk)
                        f.flush()
                        failures = 0  # progress resets the retry budget, as huggingface_hub does
                        tracker.advance(len(chunk))
                if size == 0:
                    break
            except (httpx.TransportError, httpx.TimeoutException) as e:
                failures += 1
                if failures >= attempts:
                    raise
                log.warning("download of %s interrupted (%s); resuming", partial.name, type(e).__name__)
                time.sleep(min(2 ** failures * 0.25, 5))
        if f.tell() != size:
            raise HubError("corrupt", f"{partial.name} is {f.tell()} bytes, the Hub says {size}; try again.")


def _with_retries(call, attempts: int = 3):
    httpx = _http_module()

    for i in range(attempts):
        try:
            return call()
        except (httpx.ConnectError, httpx.TimeoutException, httpx.RemoteProtocolError):
            if i == attempts - 1:
                raise
            time.sleep(0.5 * 2**i)


def _bytes_on_disk(blobs: Path, etag: str) -> int:
    for p in (blobs / etag, blobs / f"{etag}.incomplete"):
        if p.is_file():
            return p.stat().st_size
    return 0


def _check_disk(cache_dir: Path, needed: int) -> None:
    probe = cache_dir
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed + _DISK_MARGIN:
        raise HubError("disk_full", f"Not enough disk space: the download needs {needed / 1e9:.1f} GB more, "
                                    f"{free / 1e9:.1f} GB is free in {cache_dir}. Free some space or choose another "
                                    "models folder in Settings.")


def _verify(path: Path, etag: str, name: str) -> None:
    """LFS files are named by their SHA-256 on the Hub; a mismatch means corruption, so start that file over."""
    if len(etag) != 64 or any(c not in "0123456789abcdef" for c in etag):
        return
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * 2**20):
            digest.update(chunk)
    if digest.hexdigest() != etag:
        path.unlink(missing_ok=True)
        raise HubError("corrupt", f"{name} arrived damaged (checksum mismatch) and was discarded; try again.")


def _link(blob: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    try:
        dest.symlink_to(os.path.relpath(blob, dest.parent))
    except OSError:  # Windows without developer mode: a copy, as huggingface_hub does
        shutil.copyfile(blob, dest)
