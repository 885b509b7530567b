"""What the batches (`student.batches`) hand to Hugging Face `model.generate` to run at every step:

  * `Finish` (stopping criterion): which rows are done (EOS, token budget, stop string, loop stop), and when
    a batch stops early to hand its last long runners on to a later, fuller batch;
  * `RowSampler` (logits processor): seeded sampling independent of batching (`student.draws`);
  * `CalculatorHook` (logits processor): calculator decoding, the value of an arithmetic step forced;
  * `TokenTap` (stopping criterion that stops nothing): streamed rows' new tokens handed on as they come.
"""

from __future__ import annotations

from mathdistill.student.calculator import TAIL_TOKENS
from mathdistill.student.draws import nucleus_pick, uniform
from mathdistill.student.stopping import LOOP_EVERY, LOOP_WINDOW, loops, stop_candidates

__all__ = ["Finish", "RowSampler", "CalculatorHook", "TokenTap", "PREEMPT_MIN_STEPS"]

PREEMPT_MIN_STEPS = 32  # a batch runs at least this many steps before handing its last rows on


class RowSampler:
    """Logits processor for seeded sampling independent of batching: draws each running row's
    next token from softmax(scores / temperature) (top-p nucleus) with the uniform `uniform(seed,
    position)` of its row, and leaves only that token (all others -inf), so greedy decoding picks
    it. `offset[r]`: tokens row r generated in earlier batches; `width`: the batch's input width;
    `done[r]` (the stopping criterion's list, or a function giving it) is not None once row r has finished."""

    def __init__(self, seeds, offset, width, temperature, top_p, done):
        self.seeds, self.offset, self.width = seeds, offset, width
        self.temperature, self.top_p, self.done = temperature, top_p, done

    def __call__(self, input_ids, scores):
        import torch

        step = input_ids.shape[1] - self.width
        done = self.done() if callable(self.done) else self.done
        rows = [r for r, d in enumerate(done) if d is None]
        out = torch.full_like(scores, float("-inf"))
        if not rows:
            return out
        u = torch.tensor([uniform(self.seeds[r], self.offset[r] + step) for r in rows])
        probs = torch.softmax(scores[rows] / self.temperature, dim=-1)
        if self.top_p < 1:
            tokens = nucleus_pick(probs, u.to(probs.device), self.top_p)
        else:
            cum = probs.cumsum(-1)
            tokens = torch.searchsorted(cum, u.to(probs.device)[:, None] * cum[:, -1:], right=True)[:, 0]
            tokens = tokens.clamp_(max=probs.shape[1] - 1)
        out[torch.tensor(rows, device=scores.device), tokens] = 0.0
        return out


class Finish:
    """Stopping criterion for one batch, checked on the device (no host copy per step).

    Row r is finished at EOS, at a stop string in what it generated (`gen_start[r]` is where its
    generated text starts in the batch's input, earlier segments included), or when it used up
    its token `budget[r]`, or (`loop_stop`) when what it generated ends in a loop (`ends_in_loop`,
    here `loops` for the whole batch every LOOP_EVERY steps).
    Once at least `min_steps` (PREEMPT_MIN_STEPS) steps are done and no more than `preempt_at`
    rows are still running, the whole batch stops early (`preempted`): the running rows go back
    to the queue and continue in a later, fuller batch.
    EOS, budget, loop and preemption are tensor operations; a stop string is looked for (in the
    decoded tail, as before) only in the rows whose last token can have completed one
    (`stop_candidates`), so with no such token there is no per-row Python. `length[r]` (tokens
    generated in this batch once done, else None) and `looped[r]` are host copies, made when read:
    after generation (and every step by `RowSampler`, whose sampling is per-row Python anyway);
    `finished` is the rows' state on the device during it.
    """

    def __init__(self, tokenizer, width, gen_start, budget, eos, stop, preempt_at=0, loop_stop=False,
                 min_steps=None):
        self.tokenizer, self.width, self.gen_start, self.budget = tokenizer, width, gen_start, budget
        self.eos, self.stop = list(eos), list(stop)
        self.preempt_at, self.loop_stop = preempt_at, loop_stop
        self.min_steps = PREEMPT_MIN_STEPS if min_steps is None else min_steps
        self.tail = max((len(s) for s in self.stop), default=0) + 2  # tokens are >= 1 character
        self.candidates = stop_candidates(tokenizer, tuple(self.stop)) if self.stop else None
        self.finished = None  # bool [rows] on the device, from the first step on
        self._lists = None

    def _setup(self, device) -> None:
        import torch

        rows = len(self.budget)
        self.finished = torch.zeros(rows, dtype=torch.bool, device=device)
        self.at = torch.full((rows,), -1, dtype=torch.long, device=device)  # step a row finished at
        self.looped_rows = torch.zeros(rows, dtype=torch.bool, device=device)
        self.eos_ids = torch.tensor(self.eos, dtype=torch.long, device=device)
        self.budget_t = torch.tensor(self.budget, dtype=torch.long, device=device)
        self.gen_start_t = torch.tensor(self.gen_start, dtype=torch.long, device=device)
        if self.candidates is not None:
            self.candidates = self.candidates.to(device)

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        cur = input_ids.shape[1]
        steps = cur - self.width
        if self.finished is None:
            self._setup(input_ids.device)
        last, running = input_ids[:, -1], ~self.finished
        hit = (torch.isin(last, self.eos_ids) | (self.budget_t <= steps)) & running
        if self.stop:
            maybe = running & ~hit
            if self.candidates is not None:
                maybe &= torch.isin(last, self.candidates)
            for i in maybe.nonzero()[:, 0].tolist():
                tail = self.tokenizer.decode(input_ids[i, max(self.gen_start[i], cur - self.tail) :])
                if any(s in tail for s in self.stop):
                    hit[i] = True
        if self.loop_stop and steps % LOOP_EVERY == 0:
            width = min(cur, LOOP_WINDOW)
            looped = loops(input_ids[:, cur - width :], cur - self.gen_start_t) & running & ~hit
            self.looped_rows |= looped
            hit |= looped
        self.at = torch.where(hit, steps, self.at)
        self.finished |= hit
        self._lists = None
        if self.preempt_at and steps >= self.min_steps:
            left = (~self.finished).sum()
            return self.finished | ((left > 0) & (left <= self.preempt_at))
        return self.finished.clone()

    def _collect(self) -> tuple[list, list]:
        if self._lists is None:
            if self.finished is None:
                self._lists = [None] * len(self.budget), [False] * len(self.budget)
            else:
                self._lists = [n if n >= 0 else None for n in self.at.tolist()], self.looped_rows.tolist()
        return self._lists

    @property
    def length(self) -> list[int | None]:
        return self._collect()[0]

    @property
    def looped(self) -> list[bool]:
        return self._collect()[1]

    @property
    def preempted(self) -> bool:
        """Whether the batch stopped with rows still running (read after generation)."""
        return any(n is None for n in self.length)


class CalculatorHook:
    """Logits processor for calculator decoding (`student.calculator`): when a running row's last
    token ends with `=` (checked on the device for the whole batch: `Calculator.triggers`), the
    row's last generated tokens are decoded and, if they end in an arithmetic expression, the
    tokens of its value are forced one per step (all other tokens -inf); the step after the value
    (and after a "." or "," right behind it) may not write a digit (`Calculator.continuations`),
    so the value is not extended. Python runs only for the rows that triggered, are being forced
    or just were; the others are untouched. `state[r]` is row r's
    [tokens still to force, interventions so far] (kept across a hand-over to a later batch);
    `gen_start[r]` is where its generated tokens start; `finish.finished` (a `Finish`; None
    before its first step) marks the rows that are done (a finished row's token is padding)."""

    def __init__(self, calculator, gen_start, state, finish):
        self.calculator, self.gen_start, self.state, self.finish = calculator, gen_start, state, finish
        self.forcing = {r for r, (pending, _) in enumerate(state) if pending}  # rows with tokens to force
        self.guard: dict[int, bool] = {}  # rows whose value ended: True the step after it, False one more
        self.triggers = self.continuations = None

    def __call__(self, input_ids, scores):
        import torch

        if self.triggers is None:
            self.triggers = torch.tensor(self.calculator.triggers, dtype=torch.long, device=input_ids.device)
            self.continuations = torch.tensor(self.calculator.continuations, dtype=torch.long, device=scores.device)
        if self.guard:  # a forced value was just written (or its "." / ","): no digit may extend it
            guard, self.guard = self.guard, {}
            for r, first in guard.items():
                if first or int(input_ids[r, -1]) in self.calculator.joins:
                    scores[r, self.continuations] = float("-inf")
                    if first:
                        self.guard[r] = False
        cur = input_ids.shape[1]
        hit = torch.isin(input_ids[:, -1], self.triggers)
        if self.finish.finished is not None:
            hit &= ~self.finish.finished
        for r in hit.nonzero()[:, 0].tolist():  # one small copy per step: the rows that wrote `=`
            if self.state[r][0]:
                continue
            start = max(self.gen_start[r], cur - TAIL_TOKENS)
            forced = self.calculator.forced(input_ids[r, start:].tolist(), at_start=start == self.gen_start[r])
            if forced:
                self.state[r][0], self.state[r][1] = list(forced), self.state[r][1] + 1
                self.forcing.add(r)
        if self.forcing:
            rows = sorted(self.forcing)
            tokens = [self.state[r][0].pop(0) for r in rows]
            self.forcing = {r for r in rows if self.state[r][0]}
            self.guard.update({r: True for r in rows if r not in self.forcing})
            at = torch.tensor(rows, device=scores.device)
            scores[at] = float("-inf")
            scores[at, torch.tensor(tokens, device=scores.device)] = 0.0
        return scores


class TokenTap:
    """Stopping criterion that stops nothing: after every step it hands the new tokens of the streamed rows
    (`rows`: {batch row: callback(ids)}) on, each row's up to where `finish` (a `Finish`, run before it in the
    same list) says it ended. Reads the device once per step, for the streamed rows only."""

    def __init__(self, rows: dict, width: int, finish: Finish):
        self.rows, self.width, self.finish = rows, width, finish
        self.sent = dict.fromkeys(rows, 0)

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        steps = input_ids.shape[1] - self.width
        ends = self.finish.at[list(self.rows)].tolist()  # -1: still running
        for (r, emit), end in zip(self.rows.items(), ends):
            upto = end if end >= 0 else steps
            if upto > self.sent[r]:
                emit(input_ids[r, self.width + self.sent[r] : self.width + upto].tolist())
                self.sent[r] = upto
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
