"""A local stand-in for the Hugging Face Hub's file API (and for plain file URLs), on 127.0.0.1.

It answers the calls huggingface_hub 2.x makes for `snapshot_download` / `hf_hub_download`:
    GET  /api/models/{org}/{name}/revision/{rev}           repo info: the commit sha, the files
    GET  /api/models/{org}/{name}/tree/{rev}?recursive=... the file tree (sizes, LFS sha256)
    HEAD /{org}/{name}/resolve/{rev}/{path}                metadata: X-Repo-Commit, ETag, Content-Length
    GET  /{org}/{name}/resolve/{rev}/{path}                the bytes, honouring `Range: bytes=N-`
and GET /files/{name} for files outside the hub. `cut` makes the first GET of a file stop after N
bytes (the connection drops mid-file), so resuming can be observed in `requests`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".onnx", ".rar", ".zip")


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubStandIn:
    def __init__(self, repos: dict[str, dict[str, bytes]], files: dict[str, bytes] | None = None,
                 cut: dict[str, int] | None = None):
        self.repos, self.files, self.cut = repos, files or {}, dict(cut or {})
        self.commits = {repo: hashlib.sha1(json.dumps(sorted((p, _git_blob_sha1(d)) for p, d in content.items()))
                                           .encode()).hexdigest() for repo, content in repos.items()}
        self.requests: list[tuple[str, str, str | None]] = []   # (method, path, Range header)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @classmethod
    def from_folders(cls, repos: dict[str, dict[str, Path]], **kwargs) -> HubStandIn:
        """repos: repo id -> {path in the repo: local file, or local folder mapped under that prefix}."""
        content = {}
        for repo, mapping in repos.items():
            content[repo] = {}
            for prefix, local in mapping.items():
                local = Path(local)
                if local.is_dir():
                    for f in sorted(p for p in local.rglob("*") if p.is_file()):
                        key = f"{prefix}/{f.relative_to(local).as_posix()}".lstrip("/")
                        content[repo][key] = f.read_bytes()
                else:
                    content[repo][prefix] = local.read_bytes()
        return cls(content, **kwargs)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HubStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ the handler

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub.requests.append(("HEAD", self.path, self.headers.get("Range")))
                self._serve(head=True)

            def do_GET(self):
                hub.requests.append(("GET", self.path, self.headers.get("Range")))
                self._serve(head=False)

            def _json(self, value, status=200):
                body = json.dumps(value).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _missing(self):
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _serve(self, head: bool):
                parts = [unquote(p) for p in urlparse(self.path).path.split("/") if p]
                if parts[:2] == ["api", "models"] and len(parts) >= 6:
                    repo, kind = f"{parts[2]}/{parts[3]}", parts[4]
                    if repo not in hub.repos:
                        self.send_response(404)
                        self.send_header("X-Error-Code", "RepoNotFound")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    files = hub.repos[repo]
                    if kind == "revision":
                        return self._json({"id": repo, "modelId": repo, "sha": hub.commits[repo], "private": False,
                                           "siblings": [{"rfilename": p} for p in sorted(files)]})
                    if kind == "tree":
                        entries = []
                        for path, data in sorted(files.items()):
                            entry = {"type": "file", "oid": _git_blob_sha1(data), "size": len(data), "path": path}
                            if path.endswith(LFS_SUFFIXES):
                                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                                "pointerSize": 134}
                            entries.append(entry)
                        return self._json(entries)
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo, path = f"{parts[0]}/{parts[1]}", "/".join(parts[4:])
                    data = hub.repos.get(repo, {}).get(path)
                    if data is None:
                        return self._missing()
                    headers = {"X-Repo-Commit": hub.commits[repo]}
                    if path.endswith(LFS_SUFFIXES):
                        headers["ETag"] = f'"{hashlib.sha256(data).hexdigest()}"'
                    else:
                        headers["ETag"] = f'"{_git_blob_sha1(data)}"'
                    return self._bytes(f"{repo}/{path}", data, head, headers)
                if parts[:1] == ["files"] and len(parts) == 2 and parts[1] in hub.files:
                    return self._bytes(parts[1], hub.files[parts[1]], head, {})
                return self._missing()

            def _bytes(self, key: str, data: bytes, head: bool, headers: dict):
                start = 0
                wanted = self.headers.get("Range")
                if wanted and wanted.startswith("bytes="):
                    start = int(wanted[len("bytes="):].split("-")[0])
                body = data[start:]
                self.send_response(206 if start else 200)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(body)))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if head:
                    return
                limit = hub.cut.pop(key, None) if not head else None
                if limit is not None:   # the connection drops after `limit` bytes
                    self.wfile.write(body[:limit])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        return Handler
