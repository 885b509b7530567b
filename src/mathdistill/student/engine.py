"""The slot engine: continuous batching over a fixed pool of slots with a static KV cache.

    eng = Engine(model, tok, slots=64, capacity=640, max_new_tokens=512, stop=["\\nQuestion:"])
    eng.submit([Row(key=(0, 0), ids=prompt_ids, budget=256)])
    eng.run(on_done=lambda row, ids, looped, interventions: ...)

Every slot holds one row (a prompt and its completion so far). A decode step runs every slot at once
(`SlotModel.decode`: fixed shapes) and everything it decides happens on the device (`_advance`): the
token (greedy, or seeded sampling with the row's temperature / top-p), the calculator's forced value and
digit guard, whether the row finished (EOS, budget, stop string, loop stop) or wrote a calculator trigger
(`=`): such a row pauses. Every `collect_every` steps the host reads two flags per slot: finished rows go
to `on_done` and their slots take the next prompts (prefilled together, right-padded to a multiple of
PREFILL_ALIGN, the other slots untouched); a paused row's tail is decoded in Python (only that row's) and
the calculator's value is queued for it to write, token by token, in the next steps. A pause only delays
a row, so its text is the one it would write alone: a row's output depends on its prompt, its seed and
the model, never on the other rows or on when the host looked.
On CUDA the decode step is captured as a CUDA graph per attention window (a multiple of WINDOW_ALIGN) and
replayed; `compile=True` also compiles it (`torch.compile`; off by default: not yet measured on a GPU, and
each new engine may compile again); refills wait until REFILL_FRACTION of the slots are free. On a CPU it runs
eagerly and, once no prompt is waiting, the running rows are moved to the first slots so that steps stop
computing empty ones.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from typing import Callable

from mathdistill.student import engine_pick as pick_ops
from mathdistill.student.calculator import TAIL_TOKENS, calculator_for
from mathdistill.student.engine_kv import WINDOW_ALIGN, SlotModel
from mathdistill.student.stopping import LOOP_EVERY, LOOP_WINDOW, loops

log = logging.getLogger(__name__)

__all__ = ["Engine", "Row", "PREFILL_ALIGN", "FORCE_MAX"]

PREFILL_ALIGN = 16  # prefill batches are right-padded to a multiple of this many tokens
PREFILL_TOKENS = {"cuda": 32768, "cpu": 4096}  # most (padded) tokens in one prefill forward pass
COLLECT_EVERY = {"cuda": 8, "cpu": 1}  # decode steps between two looks of the host
REFILL_FRACTION = {"cuda": 1 / 32, "cpu": 0.0}  # free slots (of all) before a refill while others run
FORCE_MAX = 32  # most tokens of one calculator value
CPU_WINDOW_ALIGN = 16  # eager CPU steps have no graphs to reuse: attend to little more than the longest row
_INT_FIELDS = ("pos", "last", "n_gen", "budget", "seed", "loop_on", "calc_on")


@dataclass
class Row:
    """One completion to make: `ids` are the prompt tokens after the engine's shared prefix."""

    key: object
    ids: list[int]
    budget: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0  # derive_seed(...): unsigned 64 bits
    loop_stop: bool = False
    calculator: bool = False
    on_tokens: Callable[[list[int]], None] | None = None  # streaming: new tokens as they are collected


class Engine:
    """See the module doc. `sampling`, `loop_stop`, `calculator`: whether any row may use them (what the
    decode step computes); `prefix`: token ids every row's prompt starts with, stored once; `compile`:
    torch.compile the decode step (None: off; a string names the backend, e.g. "aot_eager")."""

    def __init__(self, model, tokenizer, *, slots: int, capacity: int, max_new_tokens: int, eos=(),
                 stop=(), prefix=(), sampling=False, loop_stop=False, calculator=False,
                 collect_every: int | None = None, compile: bool | str | None = None):
        import torch

        self.runner = SlotModel(model, slots, capacity)
        self.tokenizer, self.device = tokenizer, self.runner.device
        kind = self.device.type if self.device.type in COLLECT_EVERY else "cuda"
        self.collect_every = collect_every or COLLECT_EVERY[kind]
        self.prefill_tokens = PREFILL_TOKENS[kind]
        self.refill_min = max(1, int(slots * REFILL_FRACTION[kind]))
        self.cuda = self.device.type == "cuda"
        self.compile = compile or False
        self.shrink = not self.cuda and not self.compile  # eager CPU: drop empty slots at the end
        self.sampling, self.loop_stop, self.calc = sampling, loop_stop, calculator
        self.runner.set_prefix(list(prefix))
        dev, n, width = self.device, slots, max_new_tokens
        self.s = {f: torch.zeros(n, dtype=torch.long, device=dev) for f in (*_INT_FIELDS, "force_left", "force_at",
                                                                            "guard")}
        self.s.update({f: torch.zeros(n, dtype=torch.bool, device=dev) for f in ("active", "done", "paused", "looped")})
        self.s["temp"] = torch.zeros(n, dtype=torch.float32, device=dev)
        self.s["top_p"] = torch.ones(n, dtype=torch.float32, device=dev)
        self.hist = torch.zeros(n, width, dtype=torch.long, device=dev)
        self.force = torch.zeros(n, FORCE_MAX, dtype=torch.long, device=dev)
        vocab = self.runner.head.weight.shape[0]
        self.is_eos = pick_ops.token_table(vocab, eos, dev)  # token -> bool lookups (graph-safe, unlike isin)
        self.criteria = None
        if stop:
            from transformers import StopStringCriteria

            self.criteria = StopStringCriteria(tokenizer, list(stop))
            self.criteria.embedding_vec = self.criteria.embedding_vec.to(dev)
            self.criteria.target_lens = self.criteria.target_lens.to(dev)
        if calculator:
            self.calculator = calculator_for(tokenizer)
            self.is_trigger = pick_ops.token_table(vocab, self.calculator.triggers, dev)
            self.is_join = pick_ops.token_table(vocab, self.calculator.joins, dev)
            self.continuation = pick_ops.token_table(vocab, self.calculator.continuations, dev)
        self.queue: collections.deque[Row] = collections.deque()
        self.rows: list[Row | None] = [None] * n  # the row each slot holds
        self.upper = [0] * n  # host bound on each busy slot's position (no sync needed for the window)
        self.interventions = [0] * n
        self.emitted = [0] * n  # streamed tokens per slot
        self.steps, self.prefilled, self._graphs, self._compiled, self._pool = 0, 0, {}, None, None

    # --- the device step ------------------------------------------------------------------------

    def _advance(self, logits, m: int, rows):
        """Every row of slots [:m] in `rows` (bool [m]) that is active takes its next token (see the
        module doc); all state is updated in place."""
        import torch

        s = {k: v[:m] for k, v in self.s.items()}
        hist, force = self.hist[:m], self.force[:m]
        if self.calc:
            block = (s["calc_on"] > 0) & ((s["guard"] == 1) | ((s["guard"] == 2) & self.is_join[s["last"]]))
            logits = logits.masked_fill(block[:, None] & self.continuation[None], float("-inf"))
        token = pick_ops.pick(logits, s["temp"], s["top_p"], s["seed"], s["n_gen"], self.sampling)
        forcing = s["force_left"] > 0
        if self.calc:
            forced = force.gather(1, s["force_at"].clamp(max=FORCE_MAX - 1)[:, None])[:, 0]
            token = torch.where(forcing, forced, token)
        moving = rows & s["active"]
        col = s["n_gen"].clamp(max=hist.shape[1] - 1)[:, None]
        hist.scatter_(1, col, torch.where(moving, token, hist.gather(1, col)[:, 0])[:, None])
        s["n_gen"].add_(moving.long())
        s["pos"].add_(moving.long())
        s["last"].copy_(torch.where(moving, token, s["last"]))
        finished = moving & (self.is_eos[token] | (s["n_gen"] >= s["budget"]))
        if self.criteria is not None:
            window = pick_ops.stop_window(hist, s["n_gen"], self.criteria.maximum_token_len)
            finished |= moving & pick_ops.stop_hit(self.criteria, window)
        if self.loop_stop:
            due = moving & ~finished & (s["loop_on"] > 0) & (s["n_gen"] % LOOP_EVERY == 0)
            window = pick_ops.stop_window(hist, s["n_gen"], LOOP_WINDOW)
            looped = due & loops(window, s["n_gen"])
            s["looped"] |= looped
            finished |= looped
        stopped = finished
        if self.calc:
            was = forcing & moving
            s["force_at"].add_(was.long())
            s["force_left"].sub_(was.long())
            ended = was & (s["force_left"] == 0)
            guard = torch.where(ended, 1, torch.where(s["guard"] == 1, 2, 0))
            s["guard"].copy_(torch.where(moving, guard, s["guard"]))
            trigger = moving & ~finished & (s["calc_on"] > 0) & (s["force_left"] == 0) & self.is_trigger[token]
            s["paused"] |= trigger
            stopped = finished | trigger
        s["done"] |= finished
        s["active"] &= ~stopped

    def _decode(self, m: int, window: int) -> None:
        """One decode step of slots [:m] attending to `window` positions."""
        last, pos = self.s["last"][:m], self.s["pos"][:m]
        self.runner.cache.rows = self._arange[:m]
        logits = self.runner.decode(last, pos, window)
        self._advance(logits, m, self._ones[:m])

    def _step(self, m: int, window: int) -> None:
        """`_decode`, compiled where `compile` is on and, on CUDA, captured once per window as a CUDA
        graph and replayed. A compilation or capture that fails falls back (logged) to eager steps."""
        if self.cuda and self._graphs is not None:
            try:
                return self._graph(m, window)
            except Exception:  # noqa: BLE001 - the step still runs, only slower
                what = "torch.compile" if self.compile else "CUDA graph capture"
                log.warning("%s of the decode step failed; going on without it", what, exc_info=True)
                self._graphs, self.compile = ({} if self.compile else None), False
                return self._step(m, window)
        if self.compile:
            try:
                return self._compiled_step()(m, window)
            except Exception:  # noqa: BLE001
                log.warning("torch.compile of the decode step failed; decoding eagerly", exc_info=True)
                self.compile = False
        return self._decode(m, window)

    def _compiled_step(self):
        import torch

        if self._compiled is None:  # the window becomes a dynamic size after its first change: 2 compilations
            backend = self.compile if isinstance(self.compile, str) else "inductor"
            self._compiled = torch.compile(self._decode, fullgraph=True, backend=backend)
        return self._compiled

    def _graph(self, m: int, window: int) -> None:
        """CUDA: the step for this window captured once as a CUDA graph (after warm-up runs, which
        also compile it), then replayed; every input and output lives in fixed tensors."""
        import torch

        graph = self._graphs.get((m, window))
        if graph is None:
            fn = self._compiled_step() if self.compile else self._decode
            snapshot = self._snapshot()
            try:
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(2):  # warm-up (and compilation) outside the graph
                        self._restore(snapshot)
                        fn(m, window)
                torch.cuda.current_stream().wait_stream(stream)
                self._restore(snapshot)
                graph = torch.cuda.CUDAGraph()
                self._pool = self._pool or torch.cuda.graph_pool_handle()  # graphs run one at a time: one pool
                with torch.cuda.graph(graph, pool=self._pool):
                    fn(m, window)
            finally:
                self._restore(snapshot)  # warm-up and capture ran the step: undo them
            self._graphs[(m, window)] = graph
        graph.replay()

    def _snapshot(self):
        return {k: v.clone() for k, v in self.s.items()}, self.hist.clone(), self.force.clone()

    def _restore(self, snapshot) -> None:
        state, hist, force = snapshot
        for k, v in state.items():
            self.s[k].copy_(v)
        self.hist.copy_(hist)
        self.force.copy_(force)

    # --- the host loop --------------------------------------------------------------------------

    def submit(self, rows) -> None:
        """Queue `rows` (they start in the order given, as slots free up)."""
        for row in rows:
            if len(row.ids) + row.budget > self.runner.capacity or row.budget > self.hist.shape[1]:
                raise ValueError(f"row {row.key}: {len(row.ids)} prompt + {row.budget} new tokens exceed the "
                                 f"engine's {self.runner.capacity} tokens a slot / {self.hist.shape[1]} new tokens")
            self.queue.append(row)

    def busy(self) -> int:
        return sum(r is not None for r in self.rows)

    def run(self, on_done: Callable, poll: Callable[[], None] | None = None) -> None:
        """Generate until every queued row is done: `on_done(row, ids, looped, interventions)` for each
        (ids: its generated tokens, EOS included). `poll()` is called between collections (it may submit)."""
        import torch

        n = self.runner.slots
        self._arange = torch.arange(n, device=self.device)
        self._ones = torch.ones(n, dtype=torch.bool, device=self.device)
        with torch.inference_mode(), self.runner.running():
            while True:
                if poll is not None:
                    poll()
                self._refill()
                if not self.busy():
                    if self.queue:
                        continue
                    return
                m = self._width()
                top = max(self.upper[s] for s in range(m) if self.rows[s] is not None)
                align = WINDOW_ALIGN if self.cuda else CPU_WINDOW_ALIGN
                window = min(self.runner.capacity, -(-(top + 1) // align) * align)
                for _ in range(self.collect_every):
                    self._step(m, window)
                self.steps += self.collect_every
                for s in range(m):
                    if self.rows[s] is not None:
                        self.upper[s] = min(self.upper[s] + self.collect_every, self.runner.capacity - 1)
                self._collect(m, on_done)

    def _width(self) -> int:
        """How many leading slots a step runs: all (fixed shapes) unless `shrink` and nothing waits."""
        n = self.runner.slots
        if not self.shrink or self.queue:
            return n
        busy = [s for s in range(n) if self.rows[s] is not None]
        if busy and busy[-1] + 1 > 2 * len(busy):  # half the run slots are empty: move rows to the front
            self._compact(busy)
            busy = list(range(len(busy)))
        return busy[-1] + 1 if busy else 1

    def _compact(self, busy: list[int]) -> None:
        """Move the rows of slots `busy` to slots 0.. (state, history and keys/values)."""
        import torch

        src = torch.tensor(busy, device=self.device)
        dst = torch.arange(len(busy), device=self.device)
        for t in (*self.s.values(), self.hist, self.force, *self.runner.cache.keys, *self.runner.cache.values):
            t[dst] = t[src]
        moved = [self.rows[s] for s in busy]
        for name in ("rows", "upper", "interventions", "emitted"):
            values = getattr(self, name)
            kept = [values[s] for s in busy]
            values[:] = kept + [None if name == "rows" else 0] * (len(values) - len(kept))
        self.s["active"][len(busy):] = False
        assert self.rows[: len(moved)] == moved

    def _refill(self) -> None:
        """Prefill queued rows into the free slots (one forward pass per PREFILL_TOKENS), then pick
        their first tokens. Rows of the same prompt (samples) share one prefill."""
        free = [s for s in range(self.runner.slots) if self.rows[s] is None]
        if len(free) < min(self.refill_min, len(self.queue)) and self.busy():
            return
        while free and self.queue:
            take, prompts, width = [], {}, 0
            while free and self.queue:
                row = self.queue[0]
                key = tuple(row.ids)
                width2 = max(width, len(row.ids))
                if take and key not in prompts and (len(prompts) + 1) * _align(width2) > self.prefill_tokens:
                    break
                self.queue.popleft()
                take.append((free.pop(0), row))
                prompts.setdefault(key, len(prompts))
                width = width2
            self._prefill(take, prompts, _align(width))

    def _prefill(self, take, prompts: dict, width: int) -> None:
        import torch

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        for key, r in prompts.items():
            ids[r, : len(key)] = torch.tensor(key, dtype=torch.long)
        lengths = torch.tensor([len(k) for k in prompts], dtype=torch.long)
        dst = torch.tensor([s for s, _ in take], dtype=torch.long)
        src = torch.tensor([prompts[tuple(row.ids)] for _, row in take], dtype=torch.long)
        dev = self.device
        slots, src_d = dst.to(dev), src.to(dev)
        ints = torch.tensor([[len(row.ids) - 1, row.ids[-1], 0, row.budget, pick_ops.as_int64(row.seed),
                              int(row.loop_stop), int(row.calculator)] for _, row in take], dtype=torch.long)
        for j, name in enumerate(_INT_FIELDS):
            self.s[name][slots] = ints[:, j].to(dev)
        floats = torch.tensor([[row.temperature, row.top_p] for _, row in take], dtype=torch.float32).to(dev)
        self.s["temp"][slots], self.s["top_p"][slots] = floats[:, 0], floats[:, 1]
        for name in ("force_left", "force_at", "guard"):
            self.s[name][slots] = 0
        for name in ("done", "paused", "looped"):
            self.s[name][slots] = False
        self.s["active"][slots] = True
        for s, row in take:
            self.rows[s], self.upper[s], self.interventions[s], self.emitted[s] = row, len(row.ids), 0, 0
        logits = self.runner.prefill(ids.to(dev), lengths.to(dev), slots, src_d)
        self.prefilled += int(lengths.sum())
        m = max(s for s, _ in take) + 1
        full = torch.zeros(m, logits.shape[1], dtype=logits.dtype, device=dev)
        full[slots] = logits[src_d]
        rows = torch.zeros(m, dtype=torch.bool, device=dev)
        rows[slots] = True
        self._advance(full, m, rows)

    def _collect(self, m: int, on_done: Callable) -> None:
        """Hand finished rows to `on_done` and free their slots; resume paused ones (calculator)."""
        import torch

        flags = torch.stack([self.s["done"][:m].long(), self.s["paused"][:m].long(), self.s["n_gen"][:m],
                             self.s["looped"][:m].long()]).tolist()
        done, paused, n_gen, looped = flags
        streaming = [s for s in range(m) if self.rows[s] is not None and self.rows[s].on_tokens is not None
                     and n_gen[s] > self.emitted[s]]
        wanted = [s for s in range(m) if self.rows[s] is not None and (done[s] or paused[s])] + streaming
        if not wanted:
            return
        hist = dict(zip(wanted, self.hist[wanted].tolist()))
        for s in streaming:
            self.rows[s].on_tokens(hist[s][self.emitted[s] : n_gen[s]])
            self.emitted[s] = n_gen[s]
        for s in range(m):
            row = self.rows[s]
            if row is None:
                continue
            if done[s]:
                self.rows[s] = None
                on_done(row, hist[s][: n_gen[s]], bool(looped[s]), self.interventions[s])
            elif paused[s]:
                self._resume(s, hist[s][: n_gen[s]])

    def _resume(self, s: int, ids: list[int]) -> None:
        """Row in slot `s` wrote a calculator trigger: queue the value of its arithmetic (if any)."""
        import torch

        start = max(0, len(ids) - TAIL_TOKENS)
        forced = self.calculator.forced(ids[start:], at_start=start == 0)
        if forced:
            if len(forced) > FORCE_MAX:
                raise RuntimeError(f"a calculator value of {len(forced)} tokens (at most {FORCE_MAX})")
            self.force[s, : len(forced)] = torch.tensor(forced, dtype=torch.long, device=self.device)
            self.s["force_left"][s], self.s["force_at"][s] = len(forced), 0
            self.interventions[s] += 1
        self.s["paused"][s] = False
        self.s["active"][s] = True


def _align(n: int) -> int:
    return -(-n // PREFILL_ALIGN) * PREFILL_ALIGN
