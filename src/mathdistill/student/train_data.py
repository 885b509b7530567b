"""A training run's data: rows in (prompt/completion, TRL `messages`, or `teach` output of the formats asked
for), validated with errors naming the file and line (`load_rows`); their identity (`data_identity`); their
tokens, the prompt rendered exactly as evaluation renders it and the loss on the completion only
(`tokenize_rows`); and, on a GPU, whole examples packed into rows (`pack_examples`, `packed_collator`).

    rows = load_rows("teach/rationales.jsonl", thoughts=["cot"])
    examples, dropped = tokenize_rows(tok, rows, max_seq_len=1024)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from mathdistill.io import InputError, iter_jsonl
from mathdistill.student.chat import prompt_token_ids, render_completion, render_prompt

__all__ = ["load_rows", "rows_from_rationales", "data_identity", "tokenize_rows", "pack_examples", "packed_collator"]


def _check_row(row: dict, where: str) -> dict:
    for key in ("prompt", "completion"):
        if key not in row:
            raise InputError(f"{where}: missing key '{key}' (rows are prompt/completion, messages, or teach output)")
        if not isinstance(row[key], str):
            raise InputError(f"{where}: '{key}' must be a string, got {type(row[key]).__name__}")
    if not row["completion"].strip():
        raise InputError(f"{where}: 'completion' is empty")
    return {"prompt": row["prompt"], "completion": row["completion"]}


def _from_messages(messages, where: str) -> dict:
    """A TRL conversational row: the last turn (the assistant's) is the completion, the turns before it
    (ending with the user's) the prompt. A lone user turn becomes a plain prompt string."""
    if not isinstance(messages, list) or len(messages) < 2:
        raise InputError(f"{where}: 'messages' must be a list of turns ending with a user and an assistant turn")
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise InputError(f"{where}: messages[{j}] must be an object with string 'role' and 'content'")
        if m["role"] not in ("system", "user", "assistant"):
            raise InputError(f"{where}: messages[{j}]: role '{m['role']}' is not system, user or assistant")
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        raise InputError(f"{where}: the last message must be the assistant's reply (the completion), not empty")
    if messages[-2]["role"] != "user":
        raise InputError(f"{where}: the turn before the last (assistant) one must be the user's")
    prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
    return {"prompt": prompt[0]["content"] if len(prompt) == 1 else prompt, "completion": messages[-1]["content"]}


def _from_rationale(row: dict, where: str, formats: dict, tagged: bool = False) -> dict | None:
    """A `teach` output row as the thought's student prompt/target; None when not kept or another thought."""
    for key in ("question", "text", "kept", "thought"):
        if key not in row:
            raise InputError(f"{where}: missing key '{key}' (a teach rationale row)")
    if not formats:
        raise InputError(f"{where}: a teach rationale row (question/text/kept/thought): "
                         "say which formats to train on (--thought)")
    if not row["kept"] or row["thought"] not in formats:
        return None
    for key in ("question", "text"):
        if not isinstance(row[key], str) or not row[key].strip():
            raise InputError(f"{where}: '{key}' of a kept rationale must be a non-empty string")
    fmt = formats[row["thought"]]
    return {"prompt": fmt.student_prompt(row["question"]), "completion": fmt.student_target(row["text"], tagged=tagged)}


def _formats(thoughts: Sequence) -> dict:
    """name -> format, for format names or format objects (e.g. `CoT(calc_marks="add")`)."""
    from mathdistill import thoughts as formats

    out = {}
    for t in thoughts:
        if isinstance(t, formats.Thought):
            out[t.name] = t
            continue
        try:
            out[t] = formats.get(t)
        except ValueError as e:
            raise InputError(f"--thought: {e}") from None
    return out


def _items(data: str | Path | Iterable[dict]) -> tuple[str, Iterator[tuple[str, object]]]:
    """(what the data is called, (where, row) pairs): file:line for a JSONL file, 'row i' for dicts."""
    if isinstance(data, (str, Path)):
        path = Path(data)
        if path.is_dir():
            raise InputError(f"{path}: is a folder; give a JSONL file of training rows")
        return str(path), ((f"{path}:{lineno}", row) for lineno, row in iter_jsonl(path))
    return "data", ((f"row {i}", row) for i, row in enumerate(data))


def load_rows(data: str | Path | Iterable[dict], thoughts: Sequence[str] = ()) -> list[dict]:
    """Validated {prompt, completion} rows from a JSONL file or an iterable of dicts, each row one of
    (see the module docstring): prompt/completion, TRL `messages`, or `teach` output (kept rows of
    `thoughts` only). Errors name the file and line."""
    formats = _formats(thoughts)
    name, items = _items(data)
    rows, seen = [], 0
    for where, row in items:
        seen += 1
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected an object with 'prompt' and 'completion', got {type(row).__name__}")
        if "messages" in row:
            rows.append(_from_messages(row["messages"], where))
        elif "prompt" not in row and "question" in row and "text" in row:
            ex = _from_rationale(row, where, formats)
            rows.extend([ex] if ex else [])
        else:
            rows.append(_check_row(row, where))
    if not seen:
        raise InputError(f"{name}: no training rows")
    if not rows:
        raise InputError(f"{name}: none of its {seen} rationale rows is a kept one of {', '.join(thoughts)}: "
                         "nothing to train on")
    return rows


def rows_from_rationales(rationales: str | Path | Iterable[dict], thoughts: Sequence,
                         tagged: bool = False) -> list[dict]:
    """Training rows from `teach` output (a rationales.jsonl or its rows): for each kept rationale of one
    of `thoughts`, {prompt, completion, thought, problem_id} with the thought's student prompt and target
    (`tagged`: the target starts with the format's tag, for students that choose their format).
    The recipes build their data with this; `train --data rationales.jsonl --thought T` too. May be empty."""
    formats = _formats(thoughts)
    out = []
    for where, row in _items(rationales)[1]:
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected a teach rationale row (an object), got {type(row).__name__}")
        ex = _from_rationale(row, where, formats, tagged)
        if ex:
            out.append({**ex, "thought": row["thought"], "problem_id": row.get("problem_id")})
    return out


def data_identity(rows: list[dict]) -> dict:
    """sha256 of the normalised rows (prompt and completion only, in order) and their count: the same
    training input gives the same hash whatever file layout it came in."""
    blob = json.dumps([[r["prompt"], r["completion"]] for r in rows], ensure_ascii=False, separators=(",", ":"))
    return {"sha256": hashlib.sha256(blob.encode("utf-8")).hexdigest(), "rows": len(rows)}


def _render_prompt(tokenizer, prompt: str | list[dict]) -> str:
    """A user message (str) or earlier chat turns (list) as the prompt text, generation prompt appended."""
    if isinstance(prompt, str):
        return render_prompt(tokenizer, prompt)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in prompt) + "\n"


def tokenize_rows(tokenizer, rows: list[dict], max_seq_len: int) -> tuple[list[dict], int]:
    """[{input_ids, completion_mask}] for rows of raw user prompts and assistant completions.

    Returns the examples and how many rows were dropped because their prompt alone fills `max_seq_len`.
    """
    # the very prompt tokens eval generates from
    p_ids = [prompt_token_ids(tokenizer, _render_prompt(tokenizer, r["prompt"])) for r in rows]
    completions = [render_completion(tokenizer, r["completion"]) for r in rows]
    c_ids = tokenizer(completions, add_special_tokens=False)["input_ids"]
    examples, dropped = [], 0
    for p, c in zip(p_ids, c_ids):
        ids = (p + c)[:max_seq_len]
        if len(p) >= len(ids):
            dropped += 1
            continue
        examples.append({"input_ids": ids, "completion_mask": [0] * len(p) + [1] * (len(ids) - len(p))})
    return examples, dropped


def pack_examples(examples: list[dict], length: int):
    """A datasets.Dataset of rows of at most `length` tokens, each holding whole examples packed best-fit-
    decreasing (TRL's `pack_dataset` "bfd"): input_ids, labels (-100 outside completions) and seq_lengths, the
    lengths of the examples in the row, from which the collator gives each example its own position ids."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    rows = [{"input_ids": e["input_ids"],
             "labels": [t if m else -100 for t, m in zip(e["input_ids"], e["completion_mask"])]} for e in examples]
    return pack_dataset(Dataset.from_list(rows), length, "bfd")


def packed_collator(pad_token_id: int, flatten: bool, pad_to: int | None = None):
    """Batches of packed rows. Each example restarts its position ids at 0, which is what keeps examples
    apart: flattened (`flatten`: all rows joined into one, with cu_seq_lens, for flash-attention's varlen
    kernels; TRL's padding-free layout), or row by row for sdpa/eager, where transformers turns position ids
    into a block-diagonal causal mask per row (no attention_mask may be passed, or it would be used instead).
    Either way the first token of each example is not a target (it would be predicted from the example before).
    `pad_to`: rows padded to a multiple of this length (fixed shapes for `torch.compile`)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    class PackedRows(DataCollatorForLanguageModeling):
        def torch_call(self, examples):
            out = super().torch_call(examples)
            if not self.padding_free:
                out.pop("attention_mask")
                out["labels"][out["position_ids"] == 0] = -100
            return out

    return PackedRows(pad_token_id=pad_token_id, padding_free=flatten, return_position_ids=True,
                      pad_to_multiple_of=pad_to)

