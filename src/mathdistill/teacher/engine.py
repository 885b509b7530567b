"""The teacher engine: ask a backend for `samples` rationales per problem per thought, with
bounded concurrency, rate limits, retries, a persistent reply cache, cost accounting and live
progress; then verify every rationale and write one row per (problem, thought, sample).

    backend = make_backend(config)
    result = teach(problems, "cot", backend, config=config, samples=4, out_dir="runs/x/teacher")
    result.rows, result.summary
    result.raise_if_failed()  # TeacherError when requests still failed after their retries

Kill it at any moment and call it again with the same arguments: finished requests come from
the cache (committed the moment each reply arrived) and are never sent, or paid for, twice.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Mapping, Sequence

from mathdistill.data import Problem
from mathdistill.io import InputError, write_json, write_jsonl

from .backends import Backend, PermanentError, Reply, Request, TransientError
from .budget import Budget, BudgetReached, Limits, check_prices, current, worst_case
from .cache import ReplyCache, request_key
from .config import TeacherConfig
from .jobs import Job, Progress, Stats, TeacherError, fault_kind  # noqa: F401 (TeacherError, fault_kind: API)

log = logging.getLogger("mathdistill")
NOT_SENT = "not sent: the run's teacher budget was reached"


# ---------------------------------------------------------------------------- rate limits


class RateLimiter:
    """Spaces out units (requests or tokens) to `per_minute`; one second's worth may go at once.

    `acquire(n)` reserves n units and sleeps until they are due; `adjust(delta)` corrects a
    reservation once the true amount (e.g. tokens actually used) is known.
    """

    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0
        self.tolerance = (max(1.0, self.rate) - 1.0) / self.rate  # a burst of max(1, rate) units
        self.tat = time.monotonic()  # "theoretical arrival time" of the next unit (GCRA)

    async def acquire(self, n: float = 1.0) -> None:
        now = time.monotonic()
        tat = max(self.tat, now)
        wait = tat - self.tolerance - now  # wait for room, then take n (a big n goes into debt)
        self.tat = tat + n / self.rate
        if wait > 1e-6:
            await asyncio.sleep(wait)

    def adjust(self, delta: float) -> None:
        self.tat += delta / self.rate


# ---------------------------------------------------------------------------- jobs


def resolve_thoughts(thoughts) -> list:
    """Thought objects from names / objects (one or a list); an unknown name is an InputError."""
    from mathdistill import thoughts as T

    if isinstance(thoughts, str) or not isinstance(thoughts, Sequence):
        thoughts = [thoughts]
    out = []
    for t in thoughts:
        if isinstance(t, str):
            try:
                t = T.get(t)
            except ValueError as e:
                raise InputError(str(e)) from None
        out.append(t)
    return out


def _context(context, problem: Problem, thought) -> dict | None:
    """The teacher's extra inputs for (problem, thought): `context(problem, thought)`, or
    `context[problem.id]`, or by default what the format asks for (`Thought.teacher_context`:
    knowledge gets the gold solution)."""
    if not context:
        return thought.teacher_context(problem)
    return context(problem, thought) if callable(context) else context.get(problem.id)


def build_jobs(problems, thoughts, backend: Backend, config: TeacherConfig, samples: int, context=None) -> list[Job]:
    base = config.sampling(samples)
    jobs = []
    for p in problems:
        for t in thoughts:
            ctx = _context(context, p, t)
            try:
                messages = t.teacher_messages(p.question, ctx)
            except ValueError as e:  # e.g. knowledge without a solution to work from
                raise InputError(f"problem {p.id}, thought {t.name}: {e}") from None
            for k in range(samples):
                params = dict(base)
                if config.seed is not None:
                    params["seed"] = config.seed + k
                key = request_key(backend.model, messages, params, k)
                jobs.append(Job(p, t, k, Request(messages, params, k, p.question), key, backend.model))
    return jobs


# ---------------------------------------------------------------------------- engine


class Engine:
    def __init__(self, backend: Backend, config: TeacherConfig, cache: ReplyCache | None, stats: Stats, progress,
                 budget: Budget | None = None):
        self.backend, self.config, self.cache, self.stats, self.progress = backend, config, cache, stats, progress
        self.budget = budget
        self.rpm = RateLimiter(config.rpm) if config.rpm else None
        self.tpm = RateLimiter(config.tpm) if config.tpm else None
        self.price = config.price(config.model or backend.model)  # prices are keyed by the configured model name

    def worst(self, request: Request) -> float:
        """The most `request` can cost (the budget reserves it before sending)."""
        return worst_case(request.messages, request.params.get("max_tokens", self.config.max_tokens), self.price)

    def hold_back(self, job: Job) -> None:
        """`job` is not sent: the budget stopped the run."""
        job.error, job.unsent = NOT_SENT, True
        self.stats.unsent += 1
        self.stats.done += 1
        self.progress.update()

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:  # the server said when; honour it (plus a little jitter)
            return min(retry_after, self.config.retry_after_max) * random.uniform(1.0, 1.1)
        cap = min(self.config.backoff_max, self.config.backoff_base * 2**attempt)
        return random.uniform(cap / 2, cap)  # exponential backoff, "equal jitter"

    async def _limit(self, request: Request) -> int:
        estimate = 0
        if self.rpm:
            await self.rpm.acquire(1)
        if self.tpm:
            chars = sum(len(str(m.get("content", ""))) for m in request.messages)
            estimate = chars // 4 + request.params.get("max_tokens", 0)
            await self.tpm.acquire(estimate)
        return estimate

    def _record(self, job: Job, reply: Reply, price_factor: float = 1.0) -> None:
        """Account for a reply and commit it to the cache before anything else happens (`price_factor`: the
        share of the list price paid, e.g. a Batch API's discount)."""
        job.reply = reply
        if reply.error:  # replay miss: a definitive answer, not a fault
            job.error = reply.error
            self.stats.misses += 1
            return
        job.cost = self.price.cost(reply.usage) * price_factor
        if self.cache is not None and self.backend.cacheable:
            self.cache.put(job.key, self.backend.model, reply.text, reply.finish_reason, reply.usage, job.cost)
        s = self.stats
        s.prompt_tokens += reply.usage.get("prompt_tokens") or 0
        s.completion_tokens += reply.usage.get("completion_tokens") or 0
        s.cost += job.cost
        s.cost_total += job.cost

    async def run_one(self, job: Job) -> None:
        budget = self.budget
        worst = self.worst(job.request) if budget else 0.0
        for attempt in range(self.config.max_retries + 1):
            if budget and not await budget.acquire(worst):
                self.hold_back(job)
                return
            try:
                await self._send(job)
            except TransientError as e:
                self.stats.fault(str(e))
                if attempt == self.config.max_retries:
                    job.error = f"gave up after {attempt + 1} attempt{'s' if attempt else ''}: {e}"
                    job.fault = str(e)
                    break
                self.stats.retries += 1
                await asyncio.sleep(self._delay(attempt, e.retry_after))
                continue
            except PermanentError as e:
                self.stats.fault(str(e))
                job.error = job.fault = str(e)
                break
            finally:
                if budget:  # the reply's cost (0 for a fault) replaces the reservation
                    budget.settle(worst, 1, job.cost, int(job.reply is not None))
            break
        if job.fault:
            self.stats.failures += 1
        self.stats.done += 1
        self.progress.update()

    async def _send(self, job: Job) -> Reply:
        """One attempt: rate limits, the request, the reply recorded (a fault raises)."""
        estimate = await self._limit(job.request)
        self.stats.requests += 1
        reply = await self.backend.complete(job.request)
        if self.tpm and reply.usage:
            self.tpm.adjust(sum(reply.usage.values()) - estimate)
        self._record(job, reply)
        return reply

    async def run_batched(self, jobs: list[Job], chunk: int) -> None:
        for i in range(0, len(jobs), chunk):
            part = jobs[i : i + chunk]
            if self.budget:
                worst = [self.worst(j.request) for j in part]
                sendable = sum(1 for _ in itertools.takewhile(self.budget.reserve, worst))
                if sendable < len(part):
                    self.budget.stop(worst[sendable])
                for j in part[sendable:]:
                    self.hold_back(j)
                part, worst = part[:sendable], worst[:sendable]
                if not part:
                    continue
            self.stats.requests += len(part)
            try:
                replies = await self.backend.complete_many([j.request for j in part])
            except Exception as e:  # a batch backend failing is not retried request by request
                self.stats.fault(f"{type(e).__name__}: {e}")
                for j in part:
                    j.error = j.fault = f"{type(e).__name__}: {e}"
                self.stats.failures += len(part)
                replies = []
            for job, reply in zip(part, replies):
                self._record(job, reply)
            if self.budget:
                paid = sum(j.reply is not None and not j.reply.error for j in part)
                self.budget.settle(sum(worst), len(part), sum(j.cost for j in part), paid)
            self.stats.done += len(part)
            self.progress.update()

    async def run(self, jobs: list[Job]) -> None:
        todo = self._from_cache(jobs)
        self.progress.update()
        if self.config.mode == "batch":
            from .batch import BatchRunner

            await BatchRunner(self).run(todo)
            return
        if self.backend.batched:
            await self.run_batched(todo, chunk=max(self.config.concurrency, 64))
            return
        await self.run_online(todo)

    async def run_online(self, todo: list[Job]) -> None:
        """Send `todo` one request at a time, `concurrency` of them in flight."""
        queue: asyncio.Queue[Job] = asyncio.Queue()
        for job in todo:
            queue.put_nowait(job)

        async def worker():
            while True:
                try:
                    job = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await self.run_one(job)

        n = min(self.config.concurrency, self.backend.max_concurrency or self.config.concurrency, max(1, len(todo)))
        await asyncio.gather(*(worker() for _ in range(n)))

    def _from_cache(self, jobs: list[Job]) -> list[Job]:
        if self.cache is None or not self.backend.cacheable:
            return jobs
        hits = self.cache.get_many([j.key for j in jobs])
        todo = []
        for job in jobs:
            hit = hits.get(job.key)
            if hit is None:
                todo.append(job)
                continue
            job.reply = Reply(hit["text"], hit["finish_reason"], hit["usage"])
            job.cost, job.cached = hit["cost"], True
            self.stats.cache_hits += 1
            self.stats.cost_total += hit["cost"]
            self.stats.done += 1
        return todo


# ---------------------------------------------------------------------------- verification


@dataclass
class VerifyConfig:
    """What to keep. keep: "correct" (answer equals gold), "usable" (finished, parsed), "all".
    dedupe: drop repeated rationales of the same problem and thought: "none", "exact" or
    "normalized" (whitespace and case folded). max_per_problem caps kept rows per problem+thought."""

    keep: Literal["correct", "usable", "all"] = "correct"
    dedupe: Literal["none", "exact", "normalized"] = "normalized"
    max_per_problem: int | None = None


def _dedupe_key(text: str, mode: str) -> str:
    return text if mode == "exact" else " ".join(text.split()).lower()


def verify(jobs: list[Job], verify_cfg: VerifyConfig) -> list[dict]:
    """Score each finished rationale with its thought (parse / execute / compare with gold; formats
    that give no answer, like knowledge, validate instead), then apply the keep/dedupe rules."""
    rows = []
    by_thought: dict[str, list[int]] = {}
    for job in jobs:
        r = job.reply
        text = r.text if r is not None else None
        finish = r.finish_reason if r is not None else None
        error = job.error
        if error is None and finish == "length":
            error = "cut off at max_tokens (finish_reason=length)"
        row = {
            "problem_id": job.problem.id,
            "question": job.problem.question,
            "gold": job.problem.answer,
            "thought": job.thought.name,
            "sample": job.sample,
            "teacher": job.teacher,
            "text": text,
            "prediction": None,
            "correct": False,
            "finish_reason": finish,
            "usage": (r.usage if r is not None else {}) or {},
            "cost": job.cost,
            "cached": job.cached,
            "error": error,
            "kept": False,
            "duplicate": False,
        }
        rows.append(row)
        if error is None and text is not None:
            by_thought.setdefault(job.thought.name, []).append(len(rows) - 1)
    thoughts = {j.thought.name: j.thought for j in jobs}
    for name, idx in by_thought.items():
        thought = thoughts[name]
        texts, golds = [rows[i]["text"] for i in idx], [rows[i]["gold"] for i in idx]
        if "questions" in inspect.signature(thought.score_batch).parameters:  # e.g. knowledge's leak check
            scored = thought.score_batch(texts, golds, questions=[rows[i]["question"] for i in idx])
        else:
            scored = thought.score_batch(texts, golds)
        for i, s in zip(idx, scored):
            rows[i].update(prediction=s.prediction, correct=bool(s.correct), error=s.error)
    keep_rows(rows, verify_cfg)
    return rows


def keep_rows(rows: list[dict], cfg: VerifyConfig) -> None:
    """Mark the rows `cfg` keeps (`kept`) and the repeats it drops (`duplicate`); a correct or usable row
    whose text is not its format's structure (`Thought.malformed`: an L2M text with no sub-question) is
    not kept, its `error` says why."""
    seen: dict[tuple, set] = {}
    count: dict[tuple, int] = {}
    for row in rows:
        usable = row["text"] is not None and row["finish_reason"] != "length" and row["error"] is None
        ok = {"correct": row["correct"], "usable": usable, "all": row["text"] is not None}[cfg.keep]
        if not ok:
            continue
        if cfg.keep != "all" and (why := malformed(row)):
            row["error"] = why
            continue
        group = (row["problem_id"], row["thought"])
        if cfg.dedupe != "none":
            k = _dedupe_key(row["text"], cfg.dedupe)
            if k in seen.setdefault(group, set()):
                row["duplicate"] = True
                continue
            seen[group].add(k)
        if cfg.max_per_problem is not None and count.get(group, 0) >= cfg.max_per_problem:
            continue
        count[group] = count.get(group, 0) + 1
        row["kept"] = True


def malformed(row: dict) -> str | None:
    """Why a rationale row (teach or student sample) is not its format's structure, or None (`Thought.malformed`)."""
    from mathdistill import thoughts

    name = row["thought"]
    return thoughts.thought_class(name).malformed(row["text"]) if name in thoughts.NAMES else None


# ---------------------------------------------------------------------------- summary + API


@dataclass
class TeachResult:
    """rows: one per (problem, thought, sample), failed ones included (text None, error set).
    failed: the requests still failed after their retries (problem_id, thought, sample, kind, fault:
    the last fault, error: the row's error);
    what succeeded is in the reply cache, so calling `teach` again sends only these."""

    rows: list[dict]
    summary: dict
    failed: list[dict] = field(default_factory=list)
    budget: str | None = None  # the run's teacher budget held requests back: which cap, what remains

    def failure_message(self) -> str | None:
        """'3 of 12 teacher requests failed after up to 6 retries: HTTP 500 x2 (...), ...', or None."""
        if not self.failed:
            return None
        detail: dict[str, str] = {}  # an example of each kind: "connection refused by ..."
        for f in self.failed:
            detail.setdefault(f["kind"], f["fault"][len(f["kind"]) + 1 :].strip())
        kinds = ", ".join(f"{k} x{n}" + (f" ({detail[k]})" if detail[k] else "") for k, n in self.summary["failure_kinds"].items())
        r = self.summary["max_retries"]
        return f"{len(self.failed)} of {self.summary['jobs']} teacher requests failed after up to {r} retr{'y' if r == 1 else 'ies'}: {kinds}"

    def raise_if_failed(self) -> None:
        """Raise BudgetReached when the budget held requests back, TeacherError (with `failure_message`) when
        any request failed; for callers (recipes) that must not go on with part of the teacher's data."""
        if self.budget:
            raise BudgetReached(self.budget)
        if self.failed:
            raise TeacherError(self.failure_message())


def _failed(jobs: list[Job]) -> list[dict]:
    return [
        {"problem_id": j.problem.id, "thought": j.thought.name, "sample": j.sample, "kind": fault_kind(j.fault), "fault": j.fault, "error": j.error}
        for j in jobs
        if j.fault
    ]


def summarize(stats: Stats, rows: list[dict], model: str, wall: float, failed: list[dict] | None = None, max_retries: int | None = None) -> dict:
    per = {}
    for row in rows:
        d = per.setdefault(row["thought"], {"rows": 0, "replied": 0, "correct": 0, "kept": 0, "problems": set(), "solved": set()})
        d["rows"] += 1
        d["replied"] += row["text"] is not None
        d["correct"] += row["correct"]
        d["kept"] += row["kept"]
        d["problems"].add(row["problem_id"])
        if row["kept"]:
            d["solved"].add(row["problem_id"])
    yields = {
        name: {
            "rows": d["rows"],
            "replied": d["replied"],
            "correct": d["correct"],
            "kept": d["kept"],
            "yield": round(d["correct"] / d["rows"], 4) if d["rows"] else 0.0,
            "problems": len(d["problems"]),
            "problems_with_kept": len(d["solved"]),
        }
        for name, d in per.items()
    }
    return {
        "teacher": model,
        "jobs": stats.total,
        "requests": stats.requests,
        "cache_hits": stats.cache_hits,
        "retries": stats.retries,
        "failures": stats.failures,
        "failure_kinds": dict(Counter(f["kind"] for f in failed or []).most_common()),
        "max_retries": max_retries,
        "misses": stats.misses,
        "not_sent": stats.unsent,
        "length_cut": sum(r["finish_reason"] == "length" for r in rows),
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "tokens": stats.prompt_tokens + stats.completion_tokens,
        "cost": stats.cost,
        "cost_total": stats.cost_total,
        "faults": dict(sorted(stats.errors.items())),
        "wall_s": round(wall, 3),
        "per_thought": yields,
    }


async def ateach(
    problems: Sequence[Problem],
    thoughts,
    backend: Backend,
    *,
    config: TeacherConfig,
    samples: int = 1,
    out_dir: str | Path | None = None,
    cache: str | Path | ReplyCache | None = None,
    verify_config: VerifyConfig | None = None,
    context: Callable | Mapping | None = None,
    progress: bool = False,
    budget: Limits | None = None,
) -> TeachResult:
    """Async `teach` (for callers already inside an event loop). `budget`: the caps this call counts against
    (default: the run's, `budget.limits`; see mathdistill.teacher.budget)."""
    if samples < 1:
        raise InputError(f"samples must be >= 1 (got {samples})")
    thoughts = resolve_thoughts(thoughts)
    jobs = build_jobs(problems, thoughts, backend, config, samples, context)
    if cache is None and out_dir is not None:
        cache = Path(out_dir) / "teacher_cache.sqlite"
    own_cache = cache is not None and not isinstance(cache, ReplyCache)
    store = ReplyCache(cache) if own_cache else cache
    stats = Stats(total=len(jobs))
    label = "teach " + ",".join(t.name for t in thoughts)
    limits = budget if budget is not None else current()
    if limits is not None and limits.active and backend.cacheable and limits.max_cost is not None:
        check_prices({"teacher": config}, limits.cost_key)
    t0 = time.perf_counter()
    try:
        caps = None
        if limits is not None and limits.active and backend.cacheable:
            caps = Budget.open(limits, store.path if store is not None else None)
        with Progress(progress, stats, label) as bar:
            await Engine(backend, config, store, stats, bar, caps).run(jobs)
    finally:
        if own_cache:
            store.close()
    t1 = time.perf_counter()
    rows = verify(jobs, verify_config or VerifyConfig())
    failed = _failed(jobs)
    summary = summarize(stats, rows, backend.model, time.perf_counter() - t0, failed, config.max_retries)
    summary["verify_s"] = round(time.perf_counter() - t1, 3)
    stop = None
    if stats.unsent:
        paid = [j.cost for j in jobs if j.reply is not None and not j.reply.error]
        stop = caps.message(stats.unsent, len(jobs), label, sum(paid) / len(paid) if paid else None)
        summary["budget"] = stop
    if out_dir is not None:
        out = Path(out_dir)
        write_jsonl(out / "rationales.jsonl", rows)
        write_json(out / "teach_summary.json", summary)
    return TeachResult(rows, summary, failed, stop)


def teach(problems, thoughts, backend: Backend, **kwargs) -> TeachResult:
    """Collect and verify rationales (see the module docstring), in a fresh event loop."""

    async def main():
        try:
            return await ateach(problems, thoughts, backend, **kwargs)
        finally:
            await backend.aclose()  # connections die with this loop; the backend stays usable

    return run_loop(main())


def run_loop(coro):
    """Run `coro` in a fresh event loop: uvloop's when installed (the client's per-request CPU is
    what delays each burst of replies at high concurrency; uvloop cuts the loop's share), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


async def cancel(backend, config, cache) -> dict:
    """Cancel the open batches recorded in `cache` (a ReplyCache) of an OpenAI-compatible `backend` and collect
    their partial output into it (`batch.BatchRunner.cancel`)."""
    from .batch import BatchRunner

    stats = Stats()
    with Progress(False, stats, "cancel") as bar:
        engine = Engine(backend, config, cache, stats, bar)
        return await BatchRunner(engine).cancel()
