"""Persistent, content-addressed store of teacher replies (sqlite in WAL mode).

key = sha256(backend model + messages + sampling parameters + sample index). A reply is
committed the moment it arrives, so a killed run loses at most the requests in flight, and a
re-run never pays for a finished request twice. Only successful replies are stored (including
ones cut off at max_tokens, which were paid for); failures are retried by the next run.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

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

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
