"""A scripted OpenAI-compatible chat server on 127.0.0.1, for fault-injection tests and benchmarks.

Each distinct request (messages + seed) has its own script: a list of actions played on its
1st, 2nd, ... attempt, then "ok". Actions:

    ok            200 with a chat completion (text from `reply(body)`)
    length        200, finish_reason "length"
    429:S         429 with Retry-After: S seconds
    500, 503, 400, 401, ...   that status with an error body
    hang          answer nothing for `hang_s` seconds, then close (client times out first)
    drop          close the connection without a reply
    malformed     200 whose body is not JSON
    truncated     200 whose body stops half-way (Content-Length promises more), then close
    empty         200 with JSON lacking "choices"

Every request is logged server-side (`log`: path, headers, body, action, usage), so tests can count what was really sent.
`hold_after=N` makes every request after the first N "ok" ones wait (unanswered) until `release()`
(then answered) or `drop_held()` (then closed unanswered): a deterministic moment to kill a
client mid-run.

    python tests/fake_server.py --port 8011 --latency 0.2      # prints its URL on stdout

Tests import it as `from fake_server import FakeServer` (pytest puts tests/ on sys.path: tests/
has a conftest.py and no __init__.py).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog (5) drops bursts of new connections


def body_key(body: dict) -> str:
    blob = json.dumps([body.get("messages"), body.get("seed")], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def echo_answer(body: dict) -> str:
    """Default reply: 'The answer is N' with N = number of words in the last user message."""
    last = [m for m in body.get("messages", []) if m.get("role") == "user"][-1]["content"]
    return f"Let me think step by step. The answer is {len(last.split())}"


class FakeServer:
    def __init__(
        self,
        reply: Callable[[dict], str] = echo_answer,
        script: Callable[[dict], list[str]] | None = None,
        latency: float = 0.0,
        hang_s: float = 30.0,
        hold_after: int | None = None,
        model: str = "fake-teacher",
        port: int = 0,
    ):
        self.reply, self.script, self.latency, self.hang_s = reply, script or (lambda body: []), latency, hang_s
        self.hold_after, self.model = hold_after, model
        self.lock = threading.Lock()
        self.log: list[dict] = []  # one entry per request: key, action, status, usage, time
        self.attempts: dict[str, int] = {}
        self.answered = 0  # "ok"/"length" replies fully written
        self._admitted = 0  # "ok"/"length" requests let through (not held)
        self.held = threading.Event()  # set when the first request is held back
        self._release = threading.Event()
        self._discard = False
        self._stop = threading.Event()
        handler = type("Handler", (_Handler,), {"fake": self})
        self.httpd = _Server(("127.0.0.1", port), handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread: threading.Thread | None = None

    # -------------------------------------------------------------- lifecycle
    def start(self) -> "FakeServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def release(self) -> None:
        """Answer the held requests, and hold no more."""
        self.hold_after = None
        self._release.set()

    def drop_held(self) -> None:
        """Close the held requests unanswered (unbilled), and hold no more."""
        self.hold_after = None
        self._discard = True
        self._release.set()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -------------------------------------------------------------- accounting
    def count(self, action: str | None = None) -> int:
        with self.lock:
            return sum(1 for e in self.log if action is None or e["action"] == action)

    def usage_total(self) -> dict:
        """Tokens of every reply the server completed (what a real API would bill)."""
        with self.lock:
            p = sum(e["usage"]["prompt_tokens"] for e in self.log if e.get("usage"))
            c = sum(e["usage"]["completion_tokens"] for e in self.log if e.get("usage"))
        return {"prompt_tokens": p, "completion_tokens": c}

    def _next_action(self, body: dict) -> tuple[str, str, bool]:
        key = body_key(body)
        with self.lock:
            n = self.attempts.get(key, 0)
            self.attempts[key] = n + 1
            plan = self.script(body)
            action = plan[n] if n < len(plan) else "ok"
            hold = False
            if action in ("ok", "length"):
                hold = self.hold_after is not None and self._admitted >= self.hold_after
                self._admitted += not hold
            return key, action, hold


def _usage(body: dict, text: str) -> dict:
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    completion = len(text.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes; with Nagle on, the body waits for the client's
    # delayed ACK (~40 ms per request). Real servers (uvicorn, llama.cpp, vLLM) set TCP_NODELAY too.
    disable_nagle_algorithm = True
    fake: FakeServer

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, payload: bytes, headers: dict | None = None, promise: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(promise if promise is not None else len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, json.dumps({"object": "list", "data": [{"id": self.fake.model, "object": "model"}]}).encode())
        else:
            self._send(404, b'{"error": {"message": "not found"}}')

    def do_POST(self):
        fake = self.fake
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._send(400, b'{"error": {"message": "bad json"}}')
            return
        key, action, hold = fake._next_action(body)
        entry = {"key": key, "action": action, "time": time.time(), "usage": None, "held": hold, "body": body,
                 "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}
        with fake.lock:
            fake.log.append(entry)
        if hold:
            fake.held.set()
            fake._release.wait()
            if fake._stop.is_set() or fake._discard:
                self.close_connection = True
                return
        if fake.latency:
            time.sleep(fake.latency)
        if action in ("ok", "length"):
            text = fake.reply(body)
            usage = _usage(body, text)
            payload = {
                "id": f"chatcmpl-{key}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", fake.model),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop" if action == "ok" else "length"}],
                "usage": usage,
            }
            try:
                self._send(200, json.dumps(payload).encode())
            except OSError:  # the client went away: not billed
                self.close_connection = True
                return
            with fake.lock:
                entry["usage"] = usage
                fake.answered += 1
        elif action.split(":")[0].isdigit():
            status, _, retry_after = action.partition(":")
            headers = {"Retry-After": retry_after} if retry_after else {}
            # like some real servers, echo what authorised the request (tests check it is scrubbed)
            message = f"scripted {status} for {self.headers.get('Authorization', 'no key')}"
            self._send(int(status), json.dumps({"error": {"message": message, "type": "fake"}}).encode(), headers)
        elif action == "hang":
            fake._stop.wait(fake.hang_s)
            self.close_connection = True
        elif action == "drop":
            self.close_connection = True
        elif action == "malformed":
            self._send(200, b'{"id": "x", "choices": [ {"message": <<not json>>')
        elif action == "truncated":
            full = json.dumps({"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "The answer is"}}]}).encode()
            self._send(200, full[: len(full) // 2], promise=len(full))
            self.close_connection = True
        elif action == "empty":
            self._send(200, b'{"id": "x", "object": "chat.completion"}')
        else:
            raise ValueError(f"unknown scripted action {action!r}")


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Fake OpenAI-compatible server (loopback only).")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    args = ap.parse_args()
    server = FakeServer(latency=args.latency, port=args.port)
    print(server.url, flush=True)
    try:
        server.httpd.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()


if __name__ == "__main__":
    main()
