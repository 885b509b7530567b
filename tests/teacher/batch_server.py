"""A local OpenAI-compatible Files + Batches API (and chat completions), for the teacher's batch-mode tests.

It follows the OpenAI API reference: `POST /v1/files` (multipart: purpose, file) returns a file object;
`GET /v1/files/{id}` and `/v1/files/{id}/content`; `POST /v1/batches` (input_file_id, endpoint,
completion_window, metadata) validates the input file (JSONL lines of custom_id, method, url, body; at most
`max_lines` lines and `max_bytes` bytes; custom_ids unique) and returns a batch object ("validating", or
"failed" with `errors.data`); `GET /v1/batches/{id}`; `GET /v1/batches` (newest first, `limit`, `after`);
`POST /v1/batches/{id}/cancel` ("cancelling", then "cancelled" with the partial results). A finished batch has
an output file (lines {id, custom_id, response: {status_code: 200, request_id, body}, error: null}) and an error
file (non-200 responses, and {response: null, error: {code: batch_expired | batch_cancelled, message}} for the
requests it never ran), `request_counts` and the timestamps of each status.

The test decides when a batch runs: `finish(batch_id)` runs every request (`upto=n`: the first n, the rest
expire); `auto=True` finishes a batch the first time it is looked at after `auto_after` looks, the n-th batch
created as `outcomes[n]` says (finish's keywords, e.g. {"upto": 3}: three requests ran, then it expired).
A cancelled batch has run `cancel_upto` of its requests. Each request's
outcome comes from `script(body)`, a list of actions per attempt (as tests/fake_server.py: ok, length, or an HTTP
status such as 500 or 400). `hold_create` holds the reply to `POST /v1/batches` (after creating it) until
`release_create()`: a deterministic moment to kill a client that has not yet recorded its batch id.

`executed` logs every request the server ran (batch or online: custom_id, the body's key, how), `calls` every
HTTP call (method, path) so tests count what was really sent.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from fake_server import _usage, body_key  # the same request identity and token counts as the chat server

ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/completions", "/v1/moderations")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64


class BatchServer:
    def __init__(self, reply: Callable[[dict], str], script: Callable[[dict], list[str]] | None = None,
                 auto: bool = False, auto_after: int = 0, max_lines: int = 50_000, max_bytes: int = 200_000_000,
                 model: str = "fake-teacher", outcomes: list[dict] | None = None, cancel_upto: int = 0):
        self.reply, self.script = reply, script or (lambda body: [])
        self.outcomes, self.cancel_upto, self.order = list(outcomes or []), cancel_upto, []
        self.auto, self.auto_after, self.model = auto, auto_after, model
        self.max_lines, self.max_bytes = max_lines, max_bytes
        self.lock = threading.Lock()
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.looks: dict[str, int] = {}
        self.attempts: dict[str, int] = {}
        self.executed: list[dict] = []  # key (of the body: messages + seed), custom_id, via (batch | online), status
        self.calls: list[tuple[str, str]] = []  # (method, path)
        self.hold_create = threading.Event()  # set: hold the reply to POST /v1/batches
        self.created = threading.Event()  # set once a batch was created
        self._release = threading.Event()
        self._n = 0
        handler = type("Handler", (_Handler,), {"srv": self})
        self.httpd = _Server(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def start(self) -> "BatchServer":
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "BatchServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def release_create(self) -> None:
        self.hold_create.clear()
        self._release.set()

    def _id(self, prefix: str) -> str:
        with self.lock:
            self._n += 1
            return f"{prefix}-{self._n:04d}"

    # -------------------------------------------------------------- what tests read

    def count(self, method: str, path_start: str) -> int:
        with self.lock:
            return sum(1 for m, p in self.calls if m == method and p.startswith(path_start))

    def ran(self, via: str | None = None) -> list[str]:
        """The body keys of the requests run (batch and online alike), in order."""
        with self.lock:
            return [e["key"] for e in self.executed if via is None or e["via"] == via]

    def uploaded_lines(self) -> int:
        with self.lock:
            return sum(len(f["content"].splitlines()) for f in self.files.values() if f["purpose"] == "batch")

    # -------------------------------------------------------------- files

    def add_file(self, content: bytes, purpose: str, filename: str) -> dict:
        f = {"id": self._id("file"), "object": "file", "bytes": len(content), "created_at": int(time.time()),
             "filename": filename, "purpose": purpose, "status": "processed", "content": content}
        with self.lock:
            self.files[f["id"]] = f
        return f

    @staticmethod
    def file_object(f: dict) -> dict:
        return {k: v for k, v in f.items() if k != "content"}

    # -------------------------------------------------------------- running requests

    def _run(self, body: dict) -> tuple[int, dict]:
        """Run one request: its script's action for this attempt (then "ok"), as (status, body)."""
        key = body_key(body)
        with self.lock:
            self.attempts[key] = attempt = self.attempts.get(key, 0) + 1
        action = ([*self.script(body)] + ["ok"] * attempt)[attempt - 1]
        if action in ("ok", "length"):
            text = self.reply(body)
            return 200, {"id": f"chatcmpl-{key}", "object": "chat.completion", "created": int(time.time()),
                         "model": body.get("model", self.model),
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": "stop" if action == "ok" else "length"}],
                         "usage": _usage(body, text)}
        status = int(action)
        return status, {"error": {"message": f"scripted {status}", "type": "fake", "code": None}}

    def create_batch(self, req: dict) -> tuple[int, dict]:
        f = self.files.get(req.get("input_file_id"))
        if f is None:
            return 404, {"error": {"message": f"No such File object: {req.get('input_file_id')}"}}
        if req.get("endpoint") not in ENDPOINTS or req.get("completion_window") != "24h":
            return 400, {"error": {"message": "invalid endpoint or completion_window"}}
        now = int(time.time())
        b = {"id": self._id("batch"), "object": "batch", "endpoint": req["endpoint"], "errors": None,
             "input_file_id": f["id"], "completion_window": "24h", "status": "validating", "output_file_id": None,
             "error_file_id": None, "created_at": now, "in_progress_at": None, "expires_at": now + 86400,
             "finalizing_at": None, "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None,
             "cancelled_at": None, "request_counts": {"total": 0, "completed": 0, "failed": 0},
             "metadata": req.get("metadata"), "_lines": []}
        errors = []
        lines = f["content"].decode("utf-8").splitlines()
        if f["purpose"] != "batch":
            errors.append({"code": "invalid_purpose", "message": "the input file's purpose is not batch", "line": None})
        if len(lines) > self.max_lines:
            errors.append({"code": "too_many_requests", "message": f"more than {self.max_lines} requests",
                           "line": None})
        if f["bytes"] > self.max_bytes:
            errors.append({"code": "file_too_large", "message": f"more than {self.max_bytes} bytes", "line": None})
        seen = set()
        for i, text in enumerate(lines, 1):
            try:
                line = json.loads(text)
                ok = line["method"] == "POST" and line["url"] == req["endpoint"] and isinstance(line["body"], dict)
            except (json.JSONDecodeError, KeyError, TypeError):
                ok, line = False, {}
            if not ok or line.get("custom_id") in seen:
                errors.append({"code": "invalid_request", "message": "bad or repeated line", "line": i})
            seen.add(line.get("custom_id"))
            b["_lines"].append(line)
        if errors:
            b.update(status="failed", failed_at=now, errors={"object": "list", "data": errors})
        else:
            b.update(status="in_progress", in_progress_at=now)
            b["request_counts"]["total"] = len(lines)
        with self.lock:
            self.batches[b["id"]] = b
            self.order.append(b["id"])
        self.created.set()
        return 200, b

    def finish(self, batch_id: str, upto: int | None = None, status: str | None = None) -> dict:
        """Run the batch's requests (`upto`: the first n; the others end as `status`, default "expired")."""
        with self.lock:
            b = self.batches[batch_id]
        if b["status"] not in ("in_progress", "validating", "cancelling"):
            return b
        lines = b["_lines"]
        upto = len(lines) if upto is None else upto
        end = status or ("cancelled" if b["status"] == "cancelling" else
                         "expired" if upto < len(lines) else "completed")
        out, err = [], []
        for i, line in enumerate(lines):
            cid = line["custom_id"]
            if i >= upto:
                code = "batch_cancelled" if end == "cancelled" else "batch_expired"
                err.append({"id": f"batch_req_{i}", "custom_id": cid, "response": None,
                            "error": {"code": code,
                                      "message": f"This request could not be executed before the batch {end}."}})
                continue
            status_code, body = self._run(line["body"])
            with self.lock:
                self.executed.append({"key": body_key(line["body"]), "custom_id": cid, "via": "batch",
                                      "status": status_code, "batch": batch_id})
            entry = {"id": f"batch_req_{i}", "custom_id": cid,
                     "response": {"status_code": status_code, "request_id": f"req_{i}", "body": body}, "error": None}
            (out if status_code == 200 else err).append(entry)
        now = int(time.time())
        b["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err) if end == "completed" else
                               sum(1 for e in err if e["response"] is not None)}
        if out:
            b["output_file_id"] = self.add_file("".join(json.dumps(e) + "\n" for e in out).encode(), "batch_output",
                                                "output.jsonl")["id"]
        if err:
            b["error_file_id"] = self.add_file("".join(json.dumps(e) + "\n" for e in err).encode(), "batch_output",
                                               "errors.jsonl")["id"]
        b.update(status=end, finalizing_at=now, **{f"{end}_at": now})
        return b

    def look(self, batch_id: str) -> dict:
        with self.lock:
            b = self.batches[batch_id]
            self.looks[batch_id] = self.looks.get(batch_id, 0) + 1
            due = self.looks[batch_id] > self.auto_after
        if b["status"] == "cancelling":
            self.finish(batch_id, upto=self.cancel_upto)
        elif self.auto and due:
            n = self.order.index(batch_id)
            self.finish(batch_id, **(self.outcomes[n] if n < len(self.outcomes) else {}))
        return b

    @staticmethod
    def public(b: dict) -> dict:
        return {k: v for k, v in b.items() if not k.startswith("_")}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    srv: BatchServer

    def log_message(self, *args):
        pass

    def _send(self, status: int, payload, content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _read(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _log(self, method: str) -> list[str]:
        path = urlsplit(self.path).path
        with self.srv.lock:
            self.srv.calls.append((method, path))
        return [p for p in path.split("/") if p]  # ["v1", "batches", id, "cancel"]

    def do_GET(self):
        srv, parts = self.srv, self._log("GET")
        if parts[1:2] == ["files"] and len(parts) >= 3 and parts[2] in srv.files:
            f = srv.files[parts[2]]
            if parts[3:] == ["content"]:
                return self._send(200, f["content"], "application/octet-stream")
            return self._send(200, srv.file_object(f))
        if parts[1:] == ["batches"]:
            q = parse_qs(urlsplit(self.path).query)
            limit, after = int(q.get("limit", ["20"])[0]), q.get("after", [None])[0]
            with srv.lock:
                items = sorted(srv.batches.values(), key=lambda b: b["id"], reverse=True)
            if after:
                items = [b for b in items if b["id"] < after]
            page = [srv.public(b) for b in items[:limit]]
            return self._send(200, {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                                    "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit})
        if parts[1:2] == ["batches"] and len(parts) == 3 and parts[2] in srv.batches:
            return self._send(200, srv.public(srv.look(parts[2])))
        self._send(404, {"error": {"message": f"not found: {self.path}"}})

    def do_POST(self):
        srv, parts = self.srv, self._log("POST")
        raw = self._read()
        if parts[1:] == ["files"]:
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + raw)
            fields = {part.get_param("name", header="content-disposition"): part for part in msg.iter_parts()}
            if "file" not in fields or "purpose" not in fields:
                return self._send(400, {"error": {"message": "file and purpose are required"}})
            purpose = fields["purpose"].get_payload(decode=True).decode()
            upload = fields["file"]
            f = srv.add_file(upload.get_payload(decode=True), purpose, upload.get_filename() or "upload")
            return self._send(200, srv.file_object(f))
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return self._send(400, {"error": {"message": "bad json"}})
        if parts[1:] == ["batches"]:
            status, b = srv.create_batch(body)
            if status == 200 and srv.hold_create.is_set():
                srv._release.wait()
            return self._send(status, srv.public(b) if status == 200 else b)
        if parts[1:2] == ["batches"] and parts[3:] == ["cancel"] and parts[2] in srv.batches:
            b = srv.batches[parts[2]]
            if b["status"] in ("validating", "in_progress"):
                b.update(status="cancelling", cancelling_at=int(time.time()))
            return self._send(200, srv.public(b))
        if parts[1:] == ["chat", "completions"]:
            status, payload = srv._run(body)
            with srv.lock:
                srv.executed.append({"key": body_key(body), "custom_id": None, "via": "online", "status": status})
            return self._send(status, payload)
        self._send(404, {"error": {"message": f"not found: {self.path}"}})
