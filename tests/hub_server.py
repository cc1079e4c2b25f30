"""A local HTTP server that speaks the part of the Hugging Face Hub protocol huggingface_hub uses.

Served on 127.0.0.1 only, from a thread, for the length of a test: repository info
(/api/models/{repo}/revision/{rev}), file metadata and bytes (HEAD/GET /{repo}/resolve/{rev}/{file} with ETag,
X-Repo-Commit, Content-Length and Range; Space files the same way under /spaces/{repo}/resolve/...),
/api/whoami-v2, and the Hub's errors: 401/403 with X-Error-Code GatedRepo,
404 RepoNotFound / EntryNotFound, 401 for a bad token. Faults can be injected: drop the connection after N bytes;
fail the next requests for a file (or for the repository info, under the name "api") with a 500, a 429 with
Retry-After, or a connection dropped before any answer; serve other bytes than a file's (its ETag unchanged).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Repo:
    files: dict[str, bytes]
    gated: bool = False
    allowed_tokens: set[str] = field(default_factory=set)  # tokens whose account accepted the licence


@dataclass
class HubState:
    repos: dict[str, Repo] = field(default_factory=dict)
    spaces: dict[str, Repo] = field(default_factory=dict)  # Space repositories (the mask decoder lives in one)
    users: dict[str, str] = field(default_factory=dict)  # token -> user name
    drop_after: dict[str, int] = field(default_factory=dict)  # filename -> bytes to send before cutting (once)
    # "<filename>" (its GETs) | "HEAD <filename>" | "api" (repository info) -> [500 | 429 | "drop", ...], in order
    faults: dict[str, list] = field(default_factory=dict)
    wrong_bytes: dict[str, bytes] = field(default_factory=dict)  # filename -> bytes served under the right ETag
    log: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, range)
    served: dict[str, int] = field(default_factory=dict)  # filename -> body bytes sent
    auth_seen: list[str] = field(default_factory=list)

    def add_folder(self, repo_id: str, folder: Path, **kwargs) -> Repo:
        files = {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}
        self.repos[repo_id] = Repo(files, **kwargs)
        return self.repos[repo_id]


def _etag(name: str, data: bytes) -> str:
    if name.endswith((".safetensors", ".model", ".npz")):
        return hashlib.sha256(data).hexdigest()  # LFS files: the SHA-256, as on the Hub
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git blob id


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState

    def log_message(self, *args):  # keep test output clean
        pass

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if auth:
            self.state.auth_seen.append(auth)
        return auth[7:] if auth.startswith("Bearer ") else None

    def _error(self, status: int, code: str | None, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):
        self._route()

    def do_GET(self):
        self._route()

    def _route(self):
        path = self.path.split("?")[0]
        self.state.log.append((self.command, path, self.headers.get("Range", "")))
        token = self._token()
        if token is not None and token not in self.state.users:
            return self._error(401, None, "Invalid credentials in Authorization header")
        if path == "/api/whoami-v2":
            if token is None:
                return self._error(401, None, "Invalid credentials in Authorization header")
            return self._json({"type": "user", "name": self.state.users[token],
                               "auth": {"type": "access_token", "accessToken": {"displayName": "desktop",
                                                                                "role": "read"}}})
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
            if self._fault("api"):
                return None
            return self._model_info(m.group(1))
        if m := re.fullmatch(r"/spaces/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            return self._resolve(m.group(1), m.group(3), token, self.state.spaces)
        if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            return self._resolve(m.group(1), m.group(3), token)
        return self._error(404, None, "Not found")

    def _model_info(self, repo_id: str):
        repo = self.state.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        siblings = [{"rfilename": n, "size": len(d), "blobId": _etag(n, d)} for n, d in repo.files.items()]
        return self._json({"id": repo_id, "modelId": repo_id, "sha": COMMIT, "private": False,
                           "gated": "manual" if repo.gated else False, "disabled": False, "siblings": siblings,
                           "tags": [], "downloads": 0, "likes": 0})

    def _resolve(self, repo_id: str, name: str, token: str | None, repos: dict[str, Repo] | None = None):
        repo = (self.state.repos if repos is None else repos).get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        if repo.gated and token is None:
            return self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must have access "
                                                 "to it and be authenticated to access it. Please log in.")
        if repo.gated and token not in repo.allowed_tokens:
            return self._error(403, "GatedRepo", f"Access to model {repo_id} is restricted and you are not in the "
                                                 f"authorized list. Visit https://huggingface.co/{repo_id} to ask "
                                                 "for access.")
        data = repo.files.get(name)
        if data is None:
            return self._error(404, "EntryNotFound", "Entry not found")
        if self._fault(name if self.command == "GET" else f"HEAD {name}"):
            return None
        etag = _etag(name, data)
        data = self.state.wrong_bytes.get(name, data)
        start, status = 0, 200
        if m := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "")):
            start, status = int(m.group(1)), 206
        body = data[start:]
        self.send_response(status)
        self.send_header("ETag", f'"{etag}"')
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if self.command == "HEAD":
            return
        cut = self.state.drop_after.pop(name, None)
        if cut is not None:  # send part of the body, then drop the connection
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.state.served[name] = self.state.served.get(name, 0) + cut
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)
        self.state.served[name] = self.state.served.get(name, 0) + len(body)


    def _fault(self, name: str) -> bool:
        """Answer with the next injected fault for `name`, if any is left; True when one was sent."""
        queue = self.state.faults.get(name)
        if not queue:
            return False
        fault = queue.pop(0)
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(2)  # no status line at all: the client sees the connection end
            return True
        self.send_response(fault)
        if fault == 429:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a client that cancels mid-file resets the connection; that is the point of those tests


class HubServer:
    def __init__(self):
        self.state = HubState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.httpd = _QuietServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
