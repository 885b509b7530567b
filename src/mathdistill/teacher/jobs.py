"""What the teacher engine and its Batch API runner share: a job (one request for one rationale), its stats and
progress bar, and the error a failed run ends with. Below both: the engine runs jobs (and hands them to the
Batch API runner in `mode: batch`), `batch` runs them through the Batch API without importing the engine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mathdistill.data import Problem

from .backends import Reply, Request

log = logging.getLogger("mathdistill")


# ---------------------------------------------------------------------------- stats + progress


def fault_kind(message: str) -> str:
    """The kind of a fault message: 'HTTP 500', 'timeout', 'connection error', ..."""
    return message.split(":")[0]


@dataclass
class Stats:
    total: int = 0  # (problem, thought, sample) jobs
    done: int = 0
    requests: int = 0  # sent to the backend this run, retries included
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0  # jobs with no usable reply after retries (or a permanent error)
    misses: int = 0  # replay: question / sample not recorded
    unsent: int = 0  # jobs the budget held back
    prompt_tokens: int = 0  # paid this run
    completion_tokens: int = 0
    cost: float = 0.0  # USD paid this run
    cost_total: float = 0.0  # USD of every reply used, cached ones at their recorded price
    errors: dict = field(default_factory=dict)  # error kind -> count (transient faults included)

    def fault(self, message: str) -> None:
        kind = fault_kind(message)
        self.errors[kind] = self.errors.get(kind, 0) + 1


class Progress:
    """A rich progress bar with tokens, cost, retries and ETA; silent when disabled."""

    def __init__(self, enabled: bool, stats: Stats, label: str):
        self.stats, self.bar, self.task = stats, None, None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self.task = self.bar.add_task(label, total=stats.total, info="")

    def __enter__(self):
        if self.bar:
            self.bar.start()
        return self

    def note(self, text: str) -> None:
        """A line above the bar (a batch's status); logged too, for the stage's log file."""
        log.info(text)
        if self.bar:
            self.bar.console.print(text)

    def update(self) -> None:
        if self.bar:
            s = self.stats
            info = (
                f"{s.prompt_tokens + s.completion_tokens:,} tok  ${s.cost:.4f}  "
                f"cached {s.cache_hits}  retries {s.retries}  failed {s.failures}"
            )
            self.bar.update(self.task, completed=s.done, info=info)

    def __exit__(self, *exc):
        if self.bar:
            self.update()
            self.bar.stop()


# ---------------------------------------------------------------------------- jobs


@dataclass
class Job:
    problem: Problem
    thought: object  # a mathdistill.thoughts Thought
    sample: int
    request: Request
    key: str
    teacher: str = ""  # the backend's model identity
    reply: Reply | None = None
    cost: float = 0.0
    cached: bool = False
    error: str | None = None
    fault: str | None = None  # a request that failed after its retries: the last fault
    unsent: bool = False  # held back by the budget


class TeacherError(RuntimeError):
    """Some teacher requests still failed after their retries (`TeachResult.raise_if_failed`)."""
