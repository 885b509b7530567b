"""`teacher.mode: batch`: the engine's requests through the OpenAI Files + Batches API, at the batch price.

    teacher: {kind: openai, url: https://api.openai.com/v1, model: gpt-4o-mini, mode: batch,
              prices: {gpt-4o-mini: {prompt: 0.15, completion: 0.6}}, batch: {price_factor: 0.5}}

The requests not in the reply cache go out as JSONL input files (one line per request: custom_id = its cache
key, POST /v1/chat/completions, the same body an online request sends), split at `batch.max_requests` lines
(the API's limit: 50,000) and `batch.max_bytes` (200 MB); each file is uploaded (purpose "batch") and a batch
created on it (completion window 24h). The reply cache records the file id before the batch is created and the
batch id right after, so a process killed at any point resumes polling the batches it made (one created but
not recorded is found again by its input file) and never sends their requests twice.

Every `batch.poll_interval` seconds the runner looks at its open batches; a finished one (completed, expired,
cancelled or failed) is collected: each output line's reply is committed to the reply cache at
`price_factor` times the list price (so a later online run reuses it), each error line is a fault. Requests a
batch did not answer (expired or cancelled before they ran, a 429/5xx, a timeout, absent from both files) go
out again in a new batch (`batch.retry: batch`, at most `batch.max_rounds` times per run) or online at the
list price (`retry: online`); a permanent error (other 4xx) fails the request, as online. The run's budget
(mathdistill.teacher.budget) reserves a batch's worst case before it is created and sends no batch that could
take the run past its cap. `cancel` cancels a folder's open batches and collects what they answered.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter

from mathdistill.io import InputError

from .backends import OpenAIBackend, PermanentError, Reply, TransientError
from .jobs import Job, TeacherError, fault_kind

ENDPOINT = "/v1/chat/completions"
DONE = ("completed", "expired", "cancelled", "failed")
#: error codes of a batch's error file worth sending again (the rest, like invalid requests, fail)
RETRY_CODES = {"batch_expired", "batch_cancelled", "request_timeout", "rate_limit_exceeded", "server_error"}


def _line_fault(line: dict) -> tuple[str, bool]:
    """(fault message, retryable) of one error line: an HTTP status in `response`, or an `error` code."""
    resp = line.get("response") or {}
    status = resp.get("status_code")
    if status is not None and status != 200:
        body = resp.get("body") or {}
        err = body.get("error") if isinstance(body, dict) else None
        msg = (err.get("message") if isinstance(err, dict) else None) or ""
        return f"HTTP {status}" + (f": {msg}" if msg and status < 500 and status != 429 else ""), (
            status in (408, 429) or status >= 500)
    err = line.get("error") or {}
    code = err.get("code") or "error"
    return f"batch {code}: {err.get('message') or ''}".strip(), code in RETRY_CODES


class BatchRunner:
    """Runs an engine's (`engine.Engine`) jobs through the Batch API (see the module docstring)."""

    def __init__(self, engine):
        if not isinstance(engine.backend, OpenAIBackend):
            raise InputError("mode batch needs an OpenAI-compatible teacher (kind openai)")
        if engine.cache is None:
            raise InputError("mode batch records its batches in the reply cache: give the teacher an out folder "
                             "or a cache")
        self.e, self.backend, self.cache = engine, engine.backend, engine.cache
        self.s = engine.config.batch
        self.factor = self.s.price_factor
        self.jobs: dict[str, list[Job]] = {}
        self.open: dict[str, dict] = {}  # file_id -> open batch row (+ "status", "counts" as last seen)
        self.rounds: Counter = Counter()  # key -> batches it went out in during this run
        self.retry: dict[str, str] = {}  # key -> the last retryable fault

    # ------------------------------------------------------------------ the loop

    async def run(self, jobs: list[Job]) -> None:
        for j in jobs:
            self.jobs.setdefault(j.key, []).append(j)
        for row in self.cache.open_batches():  # left by an earlier, killed process: poll, never resubmit
            self.open[row["file_id"]] = row
            if self.e.budget:
                self.e.budget.adopt(len(row["keys"]))
        if self.open:
            self.e.progress.note(f"resuming {len(self.open)} batch(es) submitted earlier")
        while True:
            await self._submit(self._sendable())
            if not self.open:
                break
            if await self._poll() == 0:
                await asyncio.sleep(self.s.poll_interval)
        left = [k for k in self.jobs if not self._answered(k) and not self.jobs[k][0].unsent]
        if self.s.retry == "online":
            first = [self.jobs[k][0] for k in left if k in self.retry]
            if first:
                self.e.progress.note(f"{len(first)} request(s) the batches did not answer: sent online")
                self.e.stats.retries += len(first)
                await self.e.run_online(first)
                for j in first:  # the same key's other jobs share the reply
                    for twin in self.jobs[j.key][1:]:
                        _share(twin, j)
                        twin.error, twin.fault, twin.unsent = j.error, j.fault, j.unsent
                        self.e.stats.done += 1
                left = [k for k in left if self.jobs[k][0] not in first]
        for k in left:  # no rounds left
            for j in self.jobs[k]:
                j.fault = self.retry.get(k, "batch: no reply")
                j.error = f"gave up after {self.rounds[k]} batch(es): {j.fault}"
                self.e.stats.failures += 1
                self.e.stats.done += 1
        self.e.progress.update()

    def _answered(self, key: str) -> bool:
        """A reply, or a permanent fault."""
        return any(j.reply is not None or j.fault for j in self.jobs[key])

    def _sendable(self) -> list[str]:
        """Keys to put in new batches: not answered, not held back, not in an open batch, rounds left."""
        waiting = {k for row in self.open.values() for k in row["keys"]}
        limit = 1 if self.s.retry == "online" else self.s.max_rounds
        return [k for k, js in self.jobs.items()
                if k not in waiting and not self._answered(k) and not js[0].unsent and self.rounds[k] < limit]

    # ------------------------------------------------------------------ submitting

    def _worst(self, key: str) -> float:
        return self.e.worst(self.jobs[key][0].request) * self.factor

    def _affordable(self, keys: list[str]) -> list[str]:
        """The longest prefix of `keys` the budget holds now. When not one fits and nothing is in flight, the
        budget stops: the rest is held back (not sent)."""
        budget = self.e.budget
        if budget is None or not keys:
            return keys
        n, worst = 0, 0.0
        while n < len(keys) and budget.fits(worst + self._worst(keys[n]), n + 1):
            worst += self._worst(keys[n])
            n += 1
        if n == 0 and budget.inflight == 0:
            budget.stop(self._worst(keys[0]))
            for k in keys:
                for j in self.jobs[k]:
                    self.e.hold_back(j)
        return keys[:n]

    def _files(self, keys: list[str]) -> list[tuple[list[str], bytes, float]]:
        """The keys in input files of at most max_requests lines and max_bytes bytes: (keys, JSONL, worst cost)."""
        files, cur, lines, size, worst = [], [], [], 0, 0.0
        for k in keys:
            line = (json.dumps({"custom_id": k, "method": "POST", "url": ENDPOINT,
                                "body": self.backend.body(self.jobs[k][0].request)}, ensure_ascii=False)
                    + "\n").encode("utf-8")
            if len(line) > self.s.max_bytes:
                raise InputError(f"one batch request is {len(line):,} bytes, more than "
                                 f"batch.max_bytes={self.s.max_bytes:,}")
            if cur and (len(cur) >= self.s.max_requests or size + len(line) > self.s.max_bytes):
                files.append((cur, b"".join(lines), worst))
                cur, lines, size, worst = [], [], 0, 0.0
            cur.append(k)
            lines.append(line)
            size += len(line)
            worst += self._worst(k)
        if cur:
            files.append((cur, b"".join(lines), worst))
        return files

    async def _submit(self, keys: list[str]) -> None:
        """Upload `keys` (what the budget holds of them) as input files and create a batch on each."""
        for file_keys, data, worst in self._files(self._affordable(keys)):
            if self.e.budget:
                self.e.budget.reserve(worst, len(file_keys))  # fits: _affordable measured the whole prefix
            name = f"mathdistill-{file_keys[0][:12]}-{len(file_keys)}.jsonl"
            try:
                f = await self._api(lambda: self.backend.client.files.create(
                    file=(name, data, "application/jsonl"), purpose="batch"))
            except BaseException:
                if self.e.budget:
                    self.e.budget.settle(worst, len(file_keys))
                raise
            self.cache.batch_uploaded(f.id, self.backend.model, file_keys, worst)
            row = {"file_id": f.id, "batch_id": None, "keys": file_keys, "worst_cost": worst, "status": "uploaded"}
            self.open[f.id] = row
            await self._create(row)
            for k in file_keys:
                self.e.stats.retries += self.rounds[k] > 0
                self.rounds[k] += 1
            self.e.stats.requests += len(file_keys)

    async def _create(self, row: dict, find: bool = False) -> None:
        """Create the batch of an uploaded file (`find`: first look for the one a killed process created on it)
        and record its id."""
        batch = await self._find(row["file_id"]) if find else None
        if batch is None:
            batch = await self._api(lambda: self.backend.client.batches.create(
                input_file_id=row["file_id"], endpoint=ENDPOINT, completion_window=self.s.completion_window,
                metadata={"mathdistill_model": self.backend.model[:500]}))
        self.cache.batch_submitted(row["file_id"], batch.id)
        row.update(batch_id=batch.id, status="submitted")
        self.e.progress.note(f"batch {batch.id}: {len(row['keys'])} requests ({batch.status})")

    async def _find(self, file_id: str, newest: int = 1000):
        """The batch created on `file_id`, if any, among the `newest` batches."""
        async def search():
            seen = 0
            async for b in self.backend.client.batches.list(limit=100):
                if b.input_file_id == file_id:
                    return b
                seen += 1
                if seen >= newest:
                    return None
            return None

        return await self._api(search)

    # ------------------------------------------------------------------ polling and collecting

    async def _poll(self) -> int:
        """Look at every open batch once; collect the finished ones. Returns how many finished."""
        finished = 0
        for row in list(self.open.values()):
            if row["batch_id"] is None:  # uploaded by a killed process: created, or not yet
                await self._create(row, find=True)
            b = await self._api(lambda: self.backend.client.batches.retrieve(row["batch_id"]))
            counts = b.request_counts
            seen = (b.status, counts.completed if counts else None, counts.failed if counts else None)
            if seen != row.get("seen"):
                row["seen"] = seen
                done = f" {counts.completed}/{counts.total} done, {counts.failed} failed" if counts else ""
                self.e.progress.note(f"batch {b.id}: {b.status}{done}")
            if b.status in DONE:
                await self._collect(row, b)
                finished += 1
        return finished

    async def _collect(self, row: dict, batch) -> None:
        """Commit a finished batch's replies to the cache, note its faults, close it; settle its reservation."""
        lines: dict[str, dict] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                content = await self._api(lambda: self.backend.client.files.content(file_id))
                for text in content.text.splitlines():
                    if text.strip():
                        line = json.loads(text)
                        lines.setdefault(line.get("custom_id"), line)
        why = f"batch {batch.status}: no reply for this request"
        if batch.status == "failed" and batch.errors:
            why = "batch failed: " + "; ".join(e.message or e.code or "" for e in batch.errors.data or [])
        cost, paid, counts = 0.0, 0, Counter()
        for key in row["keys"]:
            line = lines.get(key)
            resp = (line or {}).get("response") or {}
            fault, retryable = (why, True) if line is None else (None, False)
            if line is not None and resp.get("status_code") == 200:
                try:
                    reply = self.backend.reply_from(resp.get("body") or {})
                except TransientError as e:
                    fault, retryable = str(e), True
                else:
                    cost += self._record(key, reply)
                    paid += 1
                    counts["answered"] += 1
                    continue
            elif line is not None:
                fault, retryable = _line_fault(line)
            counts[fault_kind(fault)] += 1
            self.e.stats.fault(fault)
            if retryable:
                self.retry[key] = fault
            else:
                for j in self.jobs.get(key, []):
                    j.error = j.fault = fault
                    self.e.stats.failures += 1
                    self.e.stats.done += 1
        self.cache.batch_closed(row["file_id"], batch.status, {"batch_id": batch.id, **counts})
        del self.open[row["file_id"]]
        if self.e.budget:
            self.e.budget.settle(row["worst_cost"], len(row["keys"]), cost, paid)
        self.e.progress.update()

    def _record(self, key: str, reply: Reply) -> float:
        """A batch's reply for `key`: every job of it recorded (the cache commits it); returns what it cost."""
        jobs = self.jobs.get(key)
        if not jobs:  # a request of an earlier call (a batch left open by a killed process): cache it too
            cost = self.e.price.cost(reply.usage) * self.factor
            self.cache.put(key, self.backend.model, reply.text, reply.finish_reason, reply.usage, cost)
            return cost
        self.retry.pop(key, None)
        self.e._record(jobs[0], reply, self.factor)
        for twin in jobs[1:]:
            _share(twin, jobs[0])
        self.e.stats.done += len(jobs)
        return jobs[0].cost

    async def _api(self, make):
        """A Files/Batches call, retried like a request on transient faults; a permanent one is a TeacherError."""
        cfg = self.e.config
        for attempt in range(cfg.max_retries + 1):
            try:
                return await self.backend.call(make)
            except TransientError as e:
                if attempt == cfg.max_retries:
                    raise TeacherError(f"Batch API at {self.backend._host()}: gave up after {attempt + 1} "
                                       f"attempts: {e}") from None
                await asyncio.sleep(self.e._delay(attempt, e.retry_after))
            except PermanentError as e:
                raise TeacherError(f"Batch API at {self.backend._host()}: {e} (does this server offer the Files and "
                                   "Batches API? else use mode: online)") from None

    # ------------------------------------------------------------------ cancelling

    async def cancel(self) -> dict:
        """Cancel every open batch, wait until each has stopped, collect what they answered. Returns counts."""
        for row in self.cache.open_batches():
            self.open[row["file_id"]] = row
        asked = 0
        for row in list(self.open.values()):
            if row["batch_id"] is None:
                await self._create(row, find=True)
            b = await self._api(lambda: self.backend.client.batches.retrieve(row["batch_id"]))
            if b.status not in DONE and b.status != "cancelling":
                await self._api(lambda: self.backend.client.batches.cancel(row["batch_id"]))
                asked += 1
        while self.open:
            if await self._poll() == 0:
                await asyncio.sleep(self.s.poll_interval)
        return {"cancelled": asked}


def _share(job: Job, first: Job) -> None:
    """`job` asks what `first` asked (the same cache key): the same reply, paid once."""
    job.reply, job.cost, job.cached = first.reply, 0.0, True
