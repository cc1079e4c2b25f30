"""The byte-range downloader: one file's missing bytes appended to `blobs/<etag>.incomplete`, resumed with a Range
request from the file's length, progress counted as bytes land, and the finished file checked against its ETag.

Not huggingface_hub's file_download.http_get: that one reads 10 MB chunks, so a dropped connection loses whatever was
buffered, and its caller deletes the partial file on failure, so an interrupted 5 GB shard would start over. Here
every byte received is on disk before the next is asked for, and a cancel lands between writes.

Transient failures are retried with backoff, from the bytes already on disk: a dropped connection, a timeout, a
5xx, and a 429 after the Retry-After it names. Progress resets the budget, so only failures in a row count."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .hub_cache import blob_matches
from .hub_errors import DownloadCancelled, HubError, http_module

log = logging.getLogger(__name__)
ATTEMPTS = 5  # failures in a row before a download gives up
MAX_WAIT_S = 30.0  # the longest pause between two tries, a server's Retry-After included


@dataclass(frozen=True)
class Progress:
    filename: str
    file_done: int
    file_total: int
    done: int  # bytes on disk for the whole model, resumed bytes included
    total: int
    bytes_per_s: float  # over the last few seconds
    eta_s: float | None


class Tracker:
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


def fetch(url: str, partial: Path, size: int, headers: dict, tracker: Tracker, attempts: int = ATTEMPTS) -> None:
    """Append the missing bytes of one file to `partial`, resuming from its length, through huggingface_hub's HTTP
    session and error mapping."""
    from huggingface_hub.utils import get_session, hf_raise_for_status

    failures = 0
    with open(partial, "ab") as f:
        if f.tell() > size:  # longer than the file can be: nothing in it can be trusted
            tracker.advance(-min(f.tell(), size))
            f.truncate(0)
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
            except Exception as e:  # noqa: BLE001 - transient ones are retried, the rest go up unchanged
                failures += 1
                wait = retry_after(e, failures)
                if wait is None or failures >= attempts:
                    raise
                name = tracker.file or partial.name
                log.warning("download of %s interrupted (%s); resuming in %.1f s", name, _what(e), wait)
                time.sleep(wait)
        if f.tell() != size:
            raise HubError("corrupt", f"{partial.name} is {f.tell()} bytes, the Hub says {size}; try again.")


def with_retries(call, attempts: int = ATTEMPTS):
    """A metadata request (repository info, a file's HEAD), retried like the bytes are."""
    for failures in range(1, attempts + 1):
        try:
            return call()
        except Exception as e:  # noqa: BLE001 - transient ones are retried, the rest go up unchanged
            wait = retry_after(e, failures)
            if wait is None or failures >= attempts:
                raise
            log.warning("Hub request failed (%s); trying again in %.1f s", _what(e), wait)
            time.sleep(wait)


def retry_after(error: BaseException, failures: int) -> float | None:
    """Seconds to wait before trying again after a transient failure (the `failures`-th in a row); None when the
    failure is not transient (a refused token, a missing file, a full disk...)."""
    from huggingface_hub.errors import HfHubHTTPError

    httpx = http_module()
    backoff = min(0.25 * 2**failures, MAX_WAIT_S)
    if isinstance(error, (httpx.TransportError, httpx.TimeoutException)):
        return backoff
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    if not isinstance(error, HfHubHTTPError) or status is None:
        return None
    if status == 429:
        try:
            return min(max(float(response.headers.get("Retry-After", "")), 0.0), MAX_WAIT_S)
        except ValueError:  # absent, or an HTTP date: back off as for any other failure
            return backoff
    return backoff if 500 <= status < 600 else None


def _what(error: BaseException) -> str:
    status = getattr(getattr(error, "response", None), "status_code", None)
    return f"HTTP {status}" if status else type(error).__name__


def verify(path: Path, etag: str, name: str) -> None:
    """A file is named by its hash on the Hub (see hub_cache.blob_matches); a mismatch means corruption, so that
    file starts over."""
    if blob_matches(path, etag) is False:
        path.unlink(missing_ok=True)
        raise HubError("corrupt", f"{name} arrived damaged (checksum mismatch) and was discarded; try again.")
