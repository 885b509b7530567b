"""Concurrent requests generated together: one worker thread owns the model and runs
`student.generate.generate` (the slot engine, `student.engine`, where it runs) on everything waiting.

    batcher = Batcher(model, tokenizer, batch_size=16, wait=0.01)
    gens = batcher.generate(prompts, settings, seeds)     # blocks; from any request thread

A call waits in a queue; the worker takes everything queued (after waiting `wait` seconds for more
when it was idle), groups the calls by their generation settings (adapter, token budget,
temperature, top-p, samples, stop strings, loop stop: per-prompt seeds do not split a group) and
runs each group as one `generate` call; a call's future resolves as soon as its prompts are done
(`generate`'s `on_result`), so its request goes on (PoT programs run in the sandbox) while the
worker generates the rest. Calls arriving while the model is busy make the next group.

Streaming (`on_text`): a streamed prompt is one more row of its settings' group, its text handed on
piece by piece as it is written (`generate`'s `stream` option: every step on a CPU, every few on CUDA), so
its text, greedy or sampled with its seed, is exactly what the batched path gives; the calculator and the
loop stop act as for any row. Only the worker touches the model, so per-call adapter switches never race.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Sequence

log = logging.getLogger(__name__)


@dataclass
class _Job:
    prompts: list[str]
    settings: dict
    seeds: list[int] | None
    future: Future = field(default_factory=Future)
    on_text: Callable[[str], None] | None = None  # a streamed job (one prompt)

    @property
    def key(self) -> str:
        return json.dumps(self.settings, sort_keys=True)


class Batcher:
    def __init__(self, model, tokenizer, batch_size: int = 16, wait: float = 0.01):
        self.model, self.tokenizer, self.batch_size, self.wait = model, tokenizer, batch_size, wait
        self.queue: queue.Queue[_Job | None] = queue.Queue()
        self.stats = {"generate_calls": 0, "prompts": 0, "largest_call": 0, "streams": 0}
        self._thread = threading.Thread(target=self._work, name="mathdistill-generate", daemon=True)
        self._thread.start()

    def generate(self, prompts: Sequence[str], settings: dict, seeds: Sequence[int] | None = None) -> list:
        """Generations of `prompts` (`generate` keyword `settings`), once the worker has made them."""
        return self.submit(prompts, settings, seeds).result()

    def submit(self, prompts: Sequence[str], settings: dict, seeds: Sequence[int] | None = None,
               on_text: Callable[[str], None] | None = None) -> Future:
        """A future of the generations; `on_text` (one prompt only) streams its text as it is decoded."""
        if on_text is not None and (len(prompts) != 1 or settings.get("num_samples", 1) != 1):
            raise ValueError("streaming is for one prompt and one sample")
        job = _Job(list(prompts), dict(settings), list(seeds) if seeds is not None else None, on_text=on_text)
        self.queue.put(job)
        return job.future

    def close(self) -> None:
        self.queue.put(None)
        self._thread.join(timeout=60)

    def _work(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            jobs, deadline = [first], time.monotonic() + self.wait
            while True:  # everything waiting now; when it was idle, also what comes within `wait`
                try:
                    left = deadline - time.monotonic()
                    job = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self.queue.put(None)
                    break
                jobs.append(job)
            groups: dict[str, list[_Job]] = {}
            for job in jobs:  # a streamed job is a row among the others of its settings
                groups.setdefault(job.key, []).append(job)
            for group in groups.values():
                self._run(group)

    def _run(self, group: list[_Job]) -> None:
        try:
            self._generate(group)
        except BaseException as e:  # the requests get the error; the worker goes on
            log.exception("generation failed")
            for job in group:
                if not job.future.done():
                    job.future.set_exception(e)

    def _generate(self, group: list[_Job]) -> None:
        from mathdistill.student.generate import derive_seed, generate

        prompts = [p for job in group for p in job.prompts]
        owners = [(job, k) for job in group for k in range(len(job.prompts))]
        settings = dict(group[0].settings, stop=list(group[0].settings.get("stop") or []))
        seeds = None
        if settings.get("temperature", 0) > 0:  # a request without a seed gets a fresh one
            seeds = [s for job in group for s in (job.seeds or
                     [derive_seed(int.from_bytes(os.urandom(8), "little"))] * len(job.prompts))]
        results = {id(job): [None] * len(job.prompts) for job in group}
        left = {id(job): len(job.prompts) for job in group}

        def done(i, generation) -> None:
            job, k = owners[i]
            results[id(job)][k] = generation
            left[id(job)] -= 1
            if not left[id(job)]:
                job.future.set_result(results[id(job)])

        self.stats["generate_calls"] += 1
        self.stats["prompts"] += len(prompts)
        self.stats["largest_call"] = max(self.stats["largest_call"], len(prompts))
        streams = {i: job.on_text for i, (job, _) in enumerate(owners) if job.on_text is not None}
        self.stats["streams"] += len(streams)
        generate(self.model, self.tokenizer, prompts, **settings, seeds=seeds, batch_size=self.batch_size,
                 progress=False, on_result=done, stream=streams or None)
