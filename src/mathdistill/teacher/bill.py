"""What a teacher stage would send and cost, before anything is sent: `mathdistill run --plan`, `teach --plan`.

    plan = teacher_plan([stage, ...], folder)   # a bill per stage, totals, the run's budget
    print_teacher_plan(plan, "Plan of teach in out/")

    stage = Stage("teach-cot", "cot", teacher, problems, samples=4, cache=Path("runs/x/teach/cot/teacher_cache.sqlite"))
    bill = stage_bill(stage)
    bill["to_send"], bill["prompt_tokens"], bill["cost"], bill["cost_max"]

The requests are the engine's own (`engine.build_jobs`: problems x samples, the same messages, parameters and cache
keys), less those the stage's reply cache already holds and those in its open batches (collected, not sent
again). Nothing is sent or written, no tokenizer is downloaded and the cache is read without writing a byte.

- Prompt tokens: with the teacher's tokenizer when one is on this machine (`teacher.tokenizer`, else the model
  name: a local folder or an id in the Hugging Face cache, local files only), the chat template applied; the
  exemplar prefix that every request of a format shares is tokenised once, then each request's own last message.
  Otherwise ~4 characters per token (+4 per message), and the plan says so.
- Completion tokens: once the stage's cache holds replies, their measured mean; before, the format's mean rationale
  length (`workload.TOKENS`, GSM8K, the student's tokenizer) or, for a format without one, the `max_tokens` limit;
  `completion_max` is always requests x `max_tokens`.
- Cost: at the teacher's price for its model (x `batch.price_factor` in batch mode): `cost` at the expected
  completion tokens, `cost_max` at the limit. A live teacher without a price has cost None.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from .budget import live
from .cache import read_only
from .config import TeacherConfig

CHARS_PER_TOKEN = 4
PER_MESSAGE = 4  # chat-template tokens per message, in the approximation


@dataclass
class Stage:
    """One teacher stage as a plan sees it. `scale` multiplies its requests when `problems` only stand in for
    ones a run will make later (FDD's new problems: `estimated` says so)."""

    stage: str
    thought: object  # a name or a mathdistill.thoughts Thought
    teacher: TeacherConfig
    problems: list
    samples: int = 1
    cache: Path | None = None  # the stage's reply cache file (it may not exist yet)
    context: Callable | Mapping | None = None
    scale: float = 1.0
    estimated: str = ""  # why the count is an estimate


def identity(teacher: TeacherConfig) -> str:
    """The model identity a backend of `teacher` puts in its cache keys (backends.make_backend's, unbuilt)."""
    if teacher.kind in ("hf", "vllm"):
        return f"{teacher.kind}:{teacher.model}"
    return teacher.model or ""


class _Keys:
    """A stand-in backend for `build_jobs`: only the model identity its cache keys need."""

    def __init__(self, model: str):
        self.model = model


# ---------------------------------------------------------------------------------------------- tokens


@functools.cache
def _local_tokenizer(name: str | None):
    """The HF tokenizer `name` names if it is on this machine (a folder, or in the HF cache), else None."""
    if not name:
        return None
    path = Path(name).expanduser()
    if not path.is_dir():
        try:
            from huggingface_hub import try_to_load_from_cache

            if not isinstance(try_to_load_from_cache(name, "tokenizer_config.json"), str):
                return None
        except Exception:  # not a repo id
            return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(path) if path.is_dir() else name, local_files_only=True)
    except Exception:
        return None


class PromptTokens:
    """Prompt tokens of requests: a shared prefix (all messages but the last) counted once, then each last message."""

    def __init__(self, teacher: TeacherConfig):
        name = teacher.tokenizer or (teacher.model if live(teacher) else None)
        self.tok = _local_tokenizer(name)
        self.how = (f"{name}'s tokenizer (chat template applied)" if self.tok is not None else
                    f"~{CHARS_PER_TOKEN} characters per token (+{PER_MESSAGE} per message): no local tokenizer for "
                    f"{name or 'this teacher'} (set its tokenizer: an HF id in the local cache or a folder)")

    def prefix(self, messages: list[dict]) -> int:
        """Tokens of `messages` with an empty last message (the shared part of a format's requests)."""
        if self.tok is None:
            return sum(len(str(m.get("content", ""))) // CHARS_PER_TOKEN + PER_MESSAGE for m in messages)
        empty = [*messages[:-1], {**messages[-1], "content": ""}]
        if getattr(self.tok, "chat_template", None):
            text = self.tok.apply_chat_template(empty, tokenize=False, add_generation_prompt=True)
            return len(self.tok(text, add_special_tokens=False)["input_ids"])
        return sum(len(self.tok(str(m.get("content", "")), add_special_tokens=False)["input_ids"]) + PER_MESSAGE
                   for m in empty)

    def lasts(self, texts: list[str]) -> list[int]:
        if self.tok is None:
            return [len(t) // CHARS_PER_TOKEN for t in texts]
        return [len(ids) for ids in self.tok(texts, add_special_tokens=False)["input_ids"]] if texts else []


# ---------------------------------------------------------------------------------------------- a stage


def _cached(cache: Path | None, keys: list[str]) -> tuple[set, set, list[int]]:
    """(keys with a reply, keys in open batches, completion tokens of the stage's replies) of the stage's cache."""
    from .cache import OPEN

    db = read_only(cache) if cache is not None else None
    if db is None:
        return set(), set(), []
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        have, usage = set(), []
        for key, use in db.execute("SELECT key, usage FROM replies") if "replies" in tables else []:
            have.add(key)
            usage.append(json.loads(use).get("completion_tokens") or 0)
        wanted = set(keys)
        waiting = set()
        if "batches" in tables:
            q = f"SELECT keys FROM batches WHERE status IN ({','.join('?' * len(OPEN))})"
            waiting = {k for (ks,) in db.execute(q, OPEN) for k in json.loads(ks)} & wanted - have
        return have & wanted, waiting, usage
    finally:
        db.close()


def stage_bill(stage: Stage) -> dict:
    """What `stage` would send and cost (see the module docstring), as one JSON-able row."""
    from mathdistill.workload import TOKENS

    from .engine import build_jobs, resolve_thoughts

    (thought,) = resolve_thoughts(stage.thought)
    t = stage.teacher
    row = {"stage": stage.stage, "format": thought.name, "teacher": t.describe(thought.name), "live": live(t),
           "mode": t.mode if live(t) else None, "problems": round(len(stage.problems) * stage.scale),
           "samples": stage.samples, "requests": 0, "cached": 0, "in_batches": 0, "to_send": 0, "prompt_tokens": 0,
           "completion_tokens": 0, "completion_max": 0, "cost": 0.0, "cost_max": 0.0, "price": None,
           "tokens_by": None, "completion_by": None, "estimated": stage.estimated or None}
    if not live(t):  # recorded or reference: no request leaves
        return row
    jobs = build_jobs(stage.problems, [thought], _Keys(identity(t)), t, stage.samples, stage.context)
    have, waiting, usage = _cached(stage.cache, [] if stage.scale != 1 else [j.key for j in jobs])
    requests = round(len(jobs) * stage.scale)
    todo = [j for j in jobs if j.key not in have and j.key not in waiting] if stage.scale == 1 else jobs
    to_send = len(todo) if stage.scale == 1 else max(0, requests - len(usage))
    counter = PromptTokens(t)
    prompt = 0
    if todo:
        first = todo[0].request.messages
        shared = first[:-1]
        fixed = counter.prefix(first)
        same = [j for j in todo if j.request.messages[:-1] == shared]
        others = [j for j in todo if j.request.messages[:-1] != shared]  # rare: a format whose prefix varies
        lasts = counter.lasts([str(j.request.messages[-1].get("content", "")) for j in same])
        prompt = fixed * len(same) + sum(lasts) + sum(
            counter.prefix(j.request.messages) + counter.lasts([str(j.request.messages[-1]["content"])])[0]
            for j in others)
        prompt = round(prompt * to_send / len(todo))
    limit = t.max_tokens
    if usage:
        expected, how = sum(usage) / len(usage), f"measured mean of the {len(usage)} replies in its cache"
    elif thought.name in TOKENS:
        expected, how = TOKENS[thought.name][1], f"the mean {thought.name} rationale (GSM8K, student tokenizer)"
    elif thought.name.startswith("write-") and stage.problems:  # a new problem: about as long as the one shown
        expected = sum(len(p.question) for p in stage.problems) / len(stage.problems) / CHARS_PER_TOKEN
        how = f"the mean length of the problems shown (~{CHARS_PER_TOKEN} characters per token)"
    else:
        expected, how = limit, "its max_tokens limit"
    expected = min(expected, limit)
    row.update(requests=requests, cached=len(have) if stage.scale == 1 else min(requests, len(usage)),
               in_batches=len(waiting), to_send=to_send, prompt_tokens=prompt,
               completion_tokens=round(expected * to_send), completion_max=limit * to_send,
               tokens_by=counter.how, completion_by=how)
    model = t.model or ""
    if model not in t.prices:
        row.update(cost=None, cost_max=None)
        return row
    price, factor = t.prices[model], (t.batch.price_factor if t.mode == "batch" else 1.0)
    row["price"] = {"prompt": price.prompt, "completion": price.completion, "factor": factor}
    row["cost"] = price.cost({"prompt_tokens": prompt, "completion_tokens": row["completion_tokens"]}) * factor
    row["cost_max"] = price.cost({"prompt_tokens": prompt, "completion_tokens": row["completion_max"]}) * factor
    return row


# ----------------------------------------------------------------------------- a plan of teach stages


def teacher_plan(stages: list[Stage], folder: Path, max_cost: float | None = None,
                 max_requests: int | None = None) -> dict:
    """{stages: a bill per stage, totals, unpriced: stages with no price, budget: the caps, what the reply caches
    under `folder` say was spent and what is left}."""
    from .budget import spent

    rows = [stage_bill(s) for s in stages]
    totals = {k: sum(r[k] for r in rows) for k in ("requests", "cached", "in_batches", "to_send", "prompt_tokens",
                                                      "completion_tokens", "completion_max")}
    unpriced = [r["stage"] for r in rows if r["live"] and r["cost"] is None and r["to_send"]]
    totals["cost"] = None if unpriced else sum(r["cost"] or 0.0 for r in rows)
    totals["cost_max"] = None if unpriced else sum(r["cost_max"] or 0.0 for r in rows)
    budget = None
    if max_cost is not None or max_requests is not None:
        s = spent(folder)
        budget = {"max_cost": max_cost, "max_requests": max_requests, "spent": s["cost"], "requests": s["requests"],
                  "left": None if max_cost is None else max_cost - s["cost"]}
    return {"stages": rows, "totals": totals, "unpriced": unpriced, "budget": budget}


def number(x) -> str:
    """A count or seconds as a table cell: thousands separated, "-" for None."""
    return "-" if x is None else f"{x:,}" if isinstance(x, int) else f"{x:,.0f}"


def usd(x) -> str:
    """A cost as a table cell: "no price" for None."""
    return "no price" if x is None else f"${x:,.4f}" if x < 1 else f"${x:,.2f}"


def plan_console():
    """The console plans print to: stdout, no markup (URLs and notes print as they are); a pipe gets wide tables
    rather than 80 columns."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160, markup=False, highlight=False)


def print_teacher_plan(t: dict, heading: str, console=None) -> None:
    """`heading`, then a teacher plan (`teacher_plan`) as a table with its notes and the budget line."""
    from rich.table import Table

    console = console or plan_console()
    console.print(f"{heading} (nothing sent, nothing written)")
    if t["stages"]:
        table = Table("stage", "teacher", "requests", "cached", "to send", "prompt tok", "completion tok (max)",
                      "cost (max)", title="Teacher")
        for r in t["stages"]:
            table.add_row(r["stage"], r["teacher"], number(r["requests"]),
                          number(r["cached"] + r["in_batches"]), number(r["to_send"]), number(r["prompt_tokens"]),
                          f"{number(r['completion_tokens'])} ({number(r['completion_max'])})",
                          "-" if not r["live"] else f"{usd(r['cost'])} ({usd(r['cost_max'])})")
        tot = t["totals"]
        table.add_row("total", "", number(tot["requests"]), number(tot["cached"] + tot["in_batches"]),
                      number(tot["to_send"]), number(tot["prompt_tokens"]),
                      f"{number(tot['completion_tokens'])} ({number(tot['completion_max'])})",
                      f"{usd(tot['cost'])} ({usd(tot['cost_max'])})")
        console.print(table)
        sending = [r for r in t["stages"] if r["live"] and r["to_send"]]
        for how in dict.fromkeys(r["tokens_by"] for r in sending):
            console.print(f"  prompt tokens ({', '.join(r['stage'] for r in sending if r['tokens_by'] == how)}): {how}")
        if sending:
            console.print("  completion tokens: " + "; ".join(f"{r['stage']}: {r['completion_by']}" for r in sending))
        for r in t["stages"]:
            if r["estimated"]:
                console.print(f"  {r['stage']}: an upper bound ({r['estimated']})")
        if t["unpriced"]:
            console.print(f"  no price for the teacher of {', '.join(t['unpriced'])}: set its prices.<model>")
        for note in t.get("notes", []):
            console.print(f"  {note}")
    b = t["budget"]
    if b:
        left = "" if b["left"] is None else f", ${b['left']:.4f} left"
        console.print(f"budget: max cost {b['max_cost']}, max requests {b['max_requests']}; spent so far (the reply "
                      f"caches): ${b['spent']:.4f}, {b['requests']} requests{left}")
