"""What a generation call is, whichever path runs it (`student.batches` or the slot engine through
`student.engine_run`): its settings and their checks, the adapter it runs, the prompts' shared prefix, its
progress bar, and its results as rows finish (`Completions`: texts cut at the stop strings, token counts,
loop stops, calculator interventions, `on_result` per prompt, streamed text).

    check_settings(max_new_tokens=0)                # InputError: max_new_tokens must be an integer >= 1 (got 0)
    with adapter_context(model, "kg"): ...          # adapter kg of a PeftModel runs inside
    results = Completions(tok, prompts=2, samples=1, wanted=1, stop=["\\n\\n"], calculator=False)
    results.done(0, 0, ids, looped=False)           # prompt 0's sample 0 finished with tokens `ids`
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from mathdistill.io import InputError
from mathdistill.student.stopping import cut_at_stop

__all__ = ["Generation", "Completions", "TextStream", "check_settings", "adapter_context", "common_prefix",
           "progress", "BASE", "DEFAULT_MAX_NEW_TOKENS", "MIN_SHARED_PREFIX"]

BASE = "base"  #: adapter sentinel: the base model with every adapter disabled
DEFAULT_MAX_NEW_TOKENS = 320
MIN_SHARED_PREFIX = 8  #: a prefix all prompts share is run once (and stored once) from this many tokens on


@dataclass
class Generation:
    """The completion(s) of one prompt: `texts[k]` has `num_tokens[k]` generated tokens."""

    texts: list[str] = field(default_factory=list)
    num_tokens: list[int] = field(default_factory=list)
    looped: list[bool] = field(default_factory=list)  # stopped by the loop stop
    interventions: list[int] = field(default_factory=list)  # calculator results forced (empty: calculator off)

    @property
    def text(self) -> str:
        return self.texts[0]


def common_prefix(seqs: list[list[int]], min_len: int = 0) -> int:
    """Length of the token prefix shared by all `seqs`, leaving every sequence at least one token; 0 when it is
    shorter than `min_len` (MIN_SHARED_PREFIX: a shorter one is not worth running and storing apart)."""
    first, n = seqs[0], min(len(s) for s in seqs) - 1
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
    return n if n >= max(min_len, 1) else 0


def adapter_context(model, adapter: str | None):
    """Context that makes `adapter` active for its duration: "name" runs that adapter of a PeftModel (and
    restores the active one after), BASE ("base") the base model with adapters disabled, None the model as it is."""
    if adapter is None:
        return contextlib.nullcontext()
    peft_config = getattr(model, "peft_config", None)
    if adapter == BASE:
        return model.disable_adapter() if peft_config else contextlib.nullcontext()
    if not peft_config or adapter not in peft_config:
        known = ", ".join(peft_config or []) or "none (not a PeftModel)"
        raise InputError(f"adapter '{adapter}' is not loaded on this model; loaded adapters: {known}")

    @contextlib.contextmanager
    def switch():
        # peft's set_adapter makes the adapter trainable unless inference_mode: switch frozen, and
        # give every parameter back the requires_grad it had (a model being trained keeps training)
        previous, grads = model.active_adapter, {n: p.requires_grad for n, p in model.named_parameters()}
        model.set_adapter(adapter, inference_mode=True)
        try:
            yield
        finally:
            model.set_adapter(previous, inference_mode=True)
            for n, p in model.named_parameters():
                p.requires_grad_(grads[n])

    return switch()


def progress(total: int, enabled: bool):
    """The progress bar, on stderr (stdout carries only results)."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(
        TextColumn("[bold]generate"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[speed]}"),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), disable=not enabled, transient=False,
        console=Console(stderr=True),
    )


_COUNT = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1")
_RULES = {  # setting -> (check, the rule as errors state it)
    "max_new_tokens": _COUNT, "batch_size": _COUNT, "num_samples": _COUNT, "samples": _COUNT, "k": _COUNT,
    "temperature": (lambda v: isinstance(v, (int, float)) and v >= 0, ">= 0"),
    "top_p": (lambda v: isinstance(v, (int, float)) and 0 < v <= 1, "in (0, 1]"),
}


def check_settings(**settings) -> None:
    """InputError naming the first generation setting out of range, e.g.
    `check_settings(batch_size=0)` -> "batch_size must be an integer >= 1 (got 0)"."""
    for name, value in settings.items():
        ok, rule = _RULES[name]
        if not ok(value):
            raise InputError(f"{name} must be {rule} (got {value!r})")


class TextStream:
    """One completion's text handed to `on_text` piece by piece as its tokens come (`add`), the pieces joining
    to its final text (`close`): a piece never ends in a partial UTF-8 character, and text that may be the
    start of a stop string is held back until it is not (the text is cut at a stop string, as the
    completion's is)."""

    def __init__(self, tokenizer, on_text: Callable[[str], None], stop: Sequence[str] = ()):
        self.tokenizer, self.on_text, self.stop = tokenizer, on_text, list(stop)
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.ids: list[int] = []
        self.sent, self.cut = 0, False

    def add(self, ids: list[int]) -> None:
        if self.cut:
            return
        self.ids += ids
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return
        upto = len(cut_at_stop(text, self.stop))
        self.cut = upto < len(text)
        self._send(text[: upto if self.cut else max(self.sent, len(text) - self.hold)])

    def close(self, text: str) -> None:
        """The completion is done and `text` is its text: what is left of it goes out."""
        self._send(text)
        self.cut = True

    def _send(self, text: str) -> None:
        if len(text) > self.sent:
            self.on_text(text[self.sent:])
            self.sent = len(text)


class Completions:
    """The results of one generation call, filled in as its rows finish (on either path): `done(i, k, ids,
    looped, interventions)` records sample k of prompt i (its tokens decoded, cut at the `stop` strings) and
    calls `on_result(i, generation)` as soon as every sample of prompt i is done; `stream(i, ids)` hands new
    tokens of prompt i's first sample to its `TextStream` (`streams`: {prompt: on_text}, closed before its
    `on_result`). `wanted` samples per prompt are returned; greedy decoding makes one and repeats it."""

    def __init__(self, tokenizer, prompts: int, samples: int, wanted: int, stop: Sequence[str], calculator: bool,
                 on_result: Callable[[int, Generation], None] | None = None,
                 streams: Mapping[int, Callable[[str], None]] | None = None):
        self.tokenizer, self.stop, self.calculator = tokenizer, list(stop), calculator
        self.wanted, self.on_result = wanted, on_result
        self.texts: list[list[str | None]] = [[None] * samples for _ in range(prompts)]
        self.counts, self.looped, self.interventions = ([[0] * samples for _ in range(prompts)] for _ in range(3))
        self.left = [samples] * prompts
        self.tokens = 0  # generated so far
        self.streams = {i: TextStream(tokenizer, on_text, stop) for i, on_text in (streams or {}).items()}

    def stream(self, i: int, ids: list[int]) -> None:
        self.streams[i].add(ids)

    def done(self, i: int, k: int, ids: list[int], looped: bool, interventions: int = 0) -> None:
        text = cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), self.stop)
        self.texts[i][k], self.counts[i][k], self.looped[i][k] = text, len(ids), looped
        self.interventions[i][k] = interventions
        self.tokens += len(ids)
        self.left[i] -= 1
        if k == 0 and i in self.streams:
            self.streams[i].close(text)
        if self.left[i] == 0 and self.on_result is not None:
            self.on_result(i, self.generation(i))

    def generation(self, i: int) -> Generation:
        """Prompt i's Generation, its one greedy completion repeated when `wanted` > 1 were asked for."""
        repeat = self.wanted // len(self.texts[i])
        calls = self.interventions[i] if self.calculator else []
        return Generation(list(self.texts[i]) * repeat, list(self.counts[i]) * repeat, list(self.looped[i]) * repeat,
                          list(calls) * repeat)

    def generations(self) -> list[Generation]:
        return [self.generation(i) for i in range(len(self.texts))]
