"""Persistent, content-addressed store of teacher replies (sqlite in WAL mode).

key = sha256(backend model + messages + sampling parameters + sample index). A reply is
committed the moment it arrives, so a killed run loses at most the requests in flight, and a
re-run never pays for a finished request twice. Only successful replies are stored (including
ones cut off at max_tokens, which were paid for); failures are retried by the next run.

The same file records the batches sent to a Batch API (`teacher.mode: batch`): the uploaded file,
the batch id and the request keys in it, written before and right after each step, so a killed
process resumes polling the batches it made instead of sending their requests again. `read_only`
and `totals` read a cache without writing anything (the plan, the run's budget).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

FILE = "teacher_cache.sqlite"  # a stage folder's reply cache (a run's --restart keeps it)
SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT,
    usage TEXT NOT NULL,
    cost REAL NOT NULL,
    created REAL NOT NULL
)
"""
# one row per batch: `file_id` is recorded before the batch is created and `batch_id` right after, so a
# batch created by a process killed before it could record the id is found again by its input file
BATCH_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    file_id TEXT PRIMARY KEY,
    batch_id TEXT,
    model TEXT NOT NULL,
    keys TEXT NOT NULL,
    worst_cost REAL NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    detail TEXT
)
"""
OPEN = ("uploaded", "submitted")  # batch rows whose requests may still be answered


def request_key(model: str, messages: list[dict], params: dict, sample: int) -> str:
    blob = json.dumps(
        {"model": model, "messages": messages, "params": params, "sample": sample},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ReplyCache:
    """sqlite reply cache; one connection, used from one thread (the engine's event loop)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process (not a power cut) and keeps commits cheap
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(SCHEMA)
        self.db.execute(BATCH_SCHEMA)

    def get_many(self, keys: list[str]) -> dict[str, dict]:
        out = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            q = f"SELECT key, model, text, finish_reason, usage, cost FROM replies WHERE key IN ({','.join('?' * len(chunk))})"
            for key, model, text, finish, usage, cost in self.db.execute(q, chunk):
                out[key] = {"model": model, "text": text, "finish_reason": finish, "usage": json.loads(usage), "cost": cost}
        return out

    def put(self, key: str, model: str, text: str, finish_reason: str | None, usage: dict, cost: float) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key, model, text, finish_reason, json.dumps(usage), cost, time.time()),
        )

    # ------------------------------------------------------------------ batches

    def batch_uploaded(self, file_id: str, model: str, keys: list[str], worst_cost: float) -> None:
        """Record an uploaded batch input file (before the batch is created)."""
        self.db.execute("INSERT OR REPLACE INTO batches VALUES (?, NULL, ?, ?, ?, 'uploaded', ?, NULL)",
                        (file_id, model, json.dumps(keys), worst_cost, time.time()))

    def batch_submitted(self, file_id: str, batch_id: str) -> None:
        self.db.execute("UPDATE batches SET batch_id = ?, status = 'submitted' WHERE file_id = ?", (batch_id, file_id))

    def batch_closed(self, file_id: str, status: str, detail: dict | None = None) -> None:
        """A batch whose results were collected (`status`: the batch's final status) or that was never created."""
        self.db.execute("UPDATE batches SET status = ?, detail = ? WHERE file_id = ?",
                        (status, json.dumps(detail or {}), file_id))

    def open_batches(self) -> list[dict]:
        """Batches recorded but not collected, oldest first: file_id, batch_id (None: maybe not created), model,
        keys, worst_cost, status."""
        q = ("SELECT file_id, batch_id, model, keys, worst_cost, status FROM batches "
             f"WHERE status IN ({','.join('?' * len(OPEN))}) ORDER BY created")
        return [{"file_id": f, "batch_id": b, "model": m, "keys": json.loads(k), "worst_cost": w, "status": s}
                for f, b, m, k, w, s in self.db.execute(q, OPEN)]

    def batches(self) -> list[dict]:
        """Every recorded batch (for reports and tests): file_id, batch_id, status, requests, detail."""
        q = "SELECT file_id, batch_id, status, keys, detail FROM batches ORDER BY created"
        return [{"file_id": f, "batch_id": b, "status": s, "requests": len(json.loads(k)),
                 "detail": json.loads(d) if d else None} for f, b, s, k, d in self.db.execute(q)]

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_only(path: str | Path) -> sqlite3.Connection | None:
    """A connection that writes nothing to the cache at `path` (None when there is none): `immutable` when no
    write-ahead log is beside it (nothing uncommitted to miss), else read-only through the log."""
    path = Path(path)
    if not path.is_file():
        return None
    wal = path.with_name(path.name + "-wal").exists()
    uri = f"{path.resolve().as_uri()}?{'mode=ro' if wal else 'immutable=1'}"
    return sqlite3.connect(uri, uri=True, timeout=30)


def totals(path: str | Path) -> dict:
    """What a cache holds, read only: replies (paid requests), their cost, and the requests and worst-case
    cost of its open batches (submitted, not yet collected)."""
    out = {"requests": 0, "cost": 0.0, "open_requests": 0, "open_cost": 0.0}
    db = read_only(path)
    if db is None:
        return out
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "replies" in tables:
            out["requests"], cost = db.execute("SELECT COUNT(*), SUM(cost) FROM replies").fetchone()
            out["cost"] = cost or 0.0
        if "batches" in tables:
            q = f"SELECT keys, worst_cost FROM batches WHERE status IN ({','.join('?' * len(OPEN))})"
            for keys, worst in db.execute(q, OPEN):
                out["open_requests"] += len(json.loads(keys))
                out["open_cost"] += worst
    finally:
        db.close()
    return out
