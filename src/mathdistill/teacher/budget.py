"""A spending cap over a whole run: `teach.max_cost` (USD) and `teach.max_requests` bound every teacher of every
stage, across resumes.

    with budget.limits(Limits(max_cost=5.0, folder=run_dir)):    # what `mathdistill run` does for a recipe
        collect(...)                                              # every engine inside counts against it

What a run has spent is what its folder's reply caches hold (every paid reply is committed there the moment it
arrives, at the price it was paid: `cache.totals`), plus the worst case of the batches it submitted and has not
collected yet; so the count survives kills, resumes and `--restart`, and nothing is counted twice. Before each
request the engine reserves that request's worst case: prompt tokens at most the UTF-8 bytes of its messages
(+ a few per message for the chat template; a byte-level BPE token is at least one byte) and completion tokens
at most its `max_tokens`. When the next request could take the run past a cap, the engine waits for the
requests in flight (their true cost replaces their reservation) and, if it still does not fit, sends nothing
more: the finished replies are kept and `BudgetReached` names the cap and what remains. Raising the cap and
running the same command again sends only the rest.

A cap needs the price of every live teacher (`check_prices`): a cost cap on a model with no price is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from mathdistill.io import InputError

from .cache import FILE, totals
from .config import TeacherConfig

#: chat-template tokens a message may add around its text (role markers, separators); generous on purpose
PER_MESSAGE = 8


class BudgetReached(RuntimeError):
    """The run's teacher budget stopped a stage: its message names the cap, what was spent and what remains."""


@dataclass(frozen=True)
class Limits:
    """A run's caps (None: no cap) and the folder whose reply caches hold what it spent; the keys name the caps
    in messages (a recipe's `teach.max_cost`, the teach command's `--max-cost`)."""

    max_cost: float | None = None
    max_requests: int | None = None
    folder: Path | None = None
    cost_key: str = "teach.max_cost"
    requests_key: str = "teach.max_requests"

    @property
    def active(self) -> bool:
        return self.max_cost is not None or self.max_requests is not None


_CURRENT: contextvars.ContextVar[Limits | None] = contextvars.ContextVar("mathdistill_teacher_budget", default=None)


@contextlib.contextmanager
def limits(value: Limits | None) -> Iterator[None]:
    """Make `value` the caps of every teacher engine run inside (a recipe's stages reach the engine through
    components that take no run; the runner sets the run's caps once here)."""
    token = _CURRENT.set(value if value is not None and value.active else None)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current() -> Limits | None:
    return _CURRENT.get()


def spent(folder: Path | None, extra: tuple[Path, ...] = ()) -> dict:
    """requests, cost (paid replies) and open_requests, open_cost (submitted batches not collected) summed over
    every reply cache under `folder` and the `extra` cache files (each counted once)."""
    files = set()
    if folder is not None and Path(folder).is_dir():
        files |= {p.resolve() for p in Path(folder).rglob(FILE)}
    files |= {Path(p).resolve() for p in extra if Path(p).is_file()}
    out = {"requests": 0, "cost": 0.0, "open_requests": 0, "open_cost": 0.0}
    for f in sorted(files):
        for k, v in totals(f).items():
            out[k] += v
    return out


def worst_case(messages: list[dict], max_tokens: int, price) -> float:
    """The most one request can cost at `price` (a config.Price): see the module docstring."""
    prompt = sum(len(str(m.get("content", "")).encode("utf-8")) + PER_MESSAGE for m in messages) + PER_MESSAGE
    return price.cost({"prompt_tokens": prompt, "completion_tokens": max_tokens})


def live(teacher: TeacherConfig) -> bool:
    """Whether `teacher` sends requests that may cost money (not a recorded or reference stand-in)."""
    return teacher.kind in ("openai", "hf", "vllm")


def find_teachers(config, prefix: str = "") -> dict[str, TeacherConfig]:
    """Every TeacherConfig inside a config (a pydantic model, dicts and lists of them), by dotted key."""
    from pydantic import BaseModel

    if isinstance(config, TeacherConfig):
        return {prefix.rstrip("."): config}
    if isinstance(config, BaseModel):
        items = ((k, getattr(config, k)) for k in type(config).model_fields)
    elif isinstance(config, dict):
        items = config.items()
    elif isinstance(config, (list, tuple)):
        items = enumerate(config)
    else:
        return {}
    out = {}
    for k, v in items:
        out.update(find_teachers(v, f"{prefix}{k}."))
    return out


def check_prices(teachers: dict[str, TeacherConfig], cost_key: str = "teach.max_cost") -> None:
    """InputError when a cost cap is set and a live teacher's model has no price ({config key: teacher})."""
    missing = [(key, t) for key, t in teachers.items() if live(t) and (t.model or "") not in t.prices]
    if missing:
        named = "; ".join(f"{key}.prices.{t.model}" for key, t in missing)
        models = ", ".join(sorted({t.model for _, t in missing}))
        raise InputError(f"{cost_key} is set, but no price is known for {models}: set {named} to "
                         "{prompt: USD per 1M prompt tokens, completion: USD per 1M completion tokens} "
                         "(0 for a free local model)")


@dataclass
class Budget:
    """The caps of one engine run, with what the run had spent before it began and what this one spends."""

    limits: Limits
    requests: int = 0  # paid replies, before and during this engine run
    cost: float = 0.0
    held_requests: int = 0  # reserved: requests in flight, batches not collected (this run's, or left by a kill)
    held_cost: float = 0.0
    inflight: int = 0  # of held_requests, those this engine run waits for (its own)
    stopped: str | None = None  # why nothing more is sent
    _changed: asyncio.Event | None = field(default=None, repr=False)

    @classmethod
    def open(cls, limits: Limits, cache: Path | None = None) -> "Budget":
        s = spent(limits.folder, (cache,) if cache is not None else ())
        return cls(limits, s["requests"], s["cost"], s["open_requests"], s["open_cost"])

    # ------------------------------------------------------------------ the rule

    def fits(self, worst: float, n: int = 1) -> bool:
        lim = self.limits
        if lim.max_requests is not None and self.requests + self.held_requests + n > lim.max_requests:
            return False
        return lim.max_cost is None or self.cost + self.held_cost + worst <= lim.max_cost + 1e-12

    def reserve(self, worst: float, n: int = 1) -> bool:
        """Hold `worst` and `n` requests when they fit (never waits); False once the budget has stopped."""
        if self.stopped or not self.fits(worst, n):
            return False
        self.held_cost += worst
        self.held_requests += n
        self.inflight += n
        return True

    def adopt(self, n: int) -> None:
        """Wait for `n` held requests counted when the budget was opened (a batch a killed process submitted)."""
        self.inflight += n

    def settle(self, worst: float, n: int, cost: float = 0.0, paid: int = 0) -> None:
        """Replace a reservation (`worst`, `n` requests) by what was paid: `paid` replies costing `cost`."""
        self.held_cost = max(0.0, self.held_cost - worst)
        self.held_requests = max(0, self.held_requests - n)
        self.inflight = max(0, self.inflight - n)
        self.cost += cost
        self.requests += paid
        if self._changed is not None:
            changed, self._changed = self._changed, None
            changed.set()

    def stop(self, worst: float) -> None:
        """Send nothing more; `stopped` says which cap and how far."""
        lim = self.limits
        if lim.max_requests is not None and self.requests + self.held_requests + 1 > lim.max_requests:
            self.stopped = (f"{lim.requests_key} = {lim.max_requests} reached: {self.requests} teacher requests "
                            "paid by this run")
        else:
            self.stopped = (f"{lim.cost_key} = ${lim.max_cost:g} reached: ${self.cost:.4f} spent by this run's "
                            f"teachers, the next request could cost up to ${worst:.4f}")

    async def acquire(self, worst: float) -> bool:
        """Reserve one request of at most `worst` USD, waiting for this engine's requests in flight to settle
        while it does not fit; False (and `stopped` set) when it cannot fit."""
        while not self.reserve(worst):
            if self.stopped:
                return False
            if self.inflight == 0:  # nothing in flight will free room
                self.stop(worst)
                return False
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()
        return True

    def message(self, not_sent: int, total: int, what: str, mean_cost: float | None) -> str:
        """'teach.max_cost = $1 reached: ...; 12 of 40 requests of teach cot not sent (~$0.31 at ...). ...'"""
        lim = self.limits
        keys = " or ".join(k for k, v in ((lim.cost_key, lim.max_cost), (lim.requests_key, lim.max_requests))
                           if v is not None)
        rest = f" (~${not_sent * mean_cost:.4f} more at the mean cost of its replies)" if mean_cost else ""
        return (f"teacher budget: {self.stopped}; {not_sent} of {total} requests of {what} not sent{rest}. "
                f"The finished replies are kept: raise {keys} and run the same command again to send only the rest")
