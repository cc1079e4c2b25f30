"""The byte-range downloader: one file's missing bytes appended to `blobs/<etag>.incomplete`, resumed with a Range
request from the file's length, progress counted as bytes land, and the finished file checked against its ETag.

Not huggingface_hub's file_download.http_get: that one reads 10 MB chunks, so a dropped connection loses whatever was
buffered, and its caller deletes the partial file on failure, so an interrupted 5 GB shard would start over. Here
every byte received is on disk before the next is asked for, and a cancel lands between writes."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .hub_errors import DownloadCancelled, HubError, http_module

log = logging.getLogger(__name__)


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


def fetch(url: str, partial: Path, size: int, headers: dict, tracker: Tracker, attempts: int = 5) -> None:
    """Append the missing bytes of one file to `partial`, resuming from its length, through huggingface_hub's HTTP
    session and error mapping."""
    from huggingface_hub.utils import get_session, hf_raise_for_status

    httpx = http_module()
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


def with_retries(call, attempts: int = 3):
    httpx = http_module()

    for i in range(attempts):
        try:
            return call()
        except (httpx.ConnectError, httpx.TimeoutException, httpx.RemoteProtocolError):
            if i == attempts - 1:
                raise
            time.sleep(0.5 * 2**i)


def verify(path: Path, etag: str, name: str) -> None:
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
