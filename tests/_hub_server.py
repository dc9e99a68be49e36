"""A local HTTP server for the weights tests: a Hugging Face hub's resolve endpoint and plain file URLs.

Hub: ``HEAD|GET /{owner}/{repo}/resolve/{revision}/{filename}`` answers like huggingface.co does
for huggingface_hub's ``hf_hub_download``: ``X-Repo-Commit`` (the commit the revision resolves
to), ``ETag`` (here the sha256 of the bytes), ``Content-Length``, ``Accept-Ranges``; a 404 carries
``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound). Plain files: ``GET /files/{name}``.
Both honour ``Range: bytes=N-``. Behaviours for failure tests: ``truncate_at[path] = K`` stops every
response to ``path`` at absolute byte K while announcing the full length (a dropped connection);
``truncate_once`` does that only for the next response; ``chunk_delay`` slows transfers down.
Every request is recorded in ``requests`` as ``(method, path, range_header)``.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class HubRepo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit sha -> {filename: bytes}
    refs: dict[str, str] = field(default_factory=dict)  # branch/tag -> commit sha

    def add_commit(self, files: dict[str, bytes], *, branch: str | None = "main") -> str:
        """Add a commit holding ``files``; move ``branch`` to it; return its 40-hex id."""
        digest = hashlib.sha1(repr(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items())).encode())
        commit = digest.hexdigest()
        self.commits[commit] = dict(files)
        if branch:
            self.refs[branch] = commit
        return commit


class LocalHub:
    """The server; start with :meth:`start`, stop with :meth:`stop` (then the port refuses connections)."""

    def __init__(self) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.files: dict[str, bytes] = {}
        self.truncate_at: dict[str, int] = {}
        self.truncate_once: dict[str, int] = {}
        self.chunk_delay = 0.0
        self.requests: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def repo(self, repo_id: str) -> HubRepo:
        return self.repos.setdefault(repo_id, HubRepo())

    def start(self) -> LocalHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                hub._handle(self, body=False)

            def do_GET(self) -> None:
                hub._handle(self, body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def count(self, method: str, path_part: str) -> int:
        with self._lock:
            return sum(1 for m, p, _ in self.requests if m == method and path_part in p)

    # -- request handling ---------------------------------------------------------------------

    def _lookup(self, path: str) -> tuple[int, dict[str, str], bytes | None]:
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            repo_id, revision, filename = m.groups()
            repo = self.repos.get(repo_id)
            if repo is None:
                return 404, {"X-Error-Code": "RepoNotFound"}, None
            commit = revision if revision in repo.commits else repo.refs.get(revision)
            if commit is None:
                return 404, {"X-Error-Code": "RevisionNotFound"}, None
            data = repo.commits[commit].get(filename)
            if data is None:
                return 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, None
            return 200, {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}, data
        if path.startswith("/files/") and path[len("/files/") :] in self.files:
            data = self.files[path[len("/files/") :]]
            return 200, {"ETag": f'"{hashlib.sha256(data).hexdigest()}"'}, data
        return 404, {}, None

    def _handle(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        path = h.path.split("?", 1)[0]
        rng = h.headers.get("Range")
        with self._lock:
            self.requests.append((h.command, path, rng))
        status, headers, data = self._lookup(path)
        if data is None:
            h.send_response(status)
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and body:
            start = int(m.group(1))
            if start >= len(data):
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(data)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            h.send_response(200)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(len(data) - start))
        h.end_headers()
        if not body:
            return
        with self._lock:
            stop = self.truncate_once.pop(path, None)
            if stop is None:
                stop = self.truncate_at.get(path, len(data))
        stop = max(start, min(stop, len(data)))
        step = 1 << 16
        for i in range(start, stop, step):
            if self.chunk_delay:
                time.sleep(self.chunk_delay)
            h.wfile.write(data[i : min(i + step, stop)])
        h.wfile.flush()
        if stop < len(data):
            h.close_connection = True
