"""Benchmark loaders: every dataset becomes a list of `Problem`.

Local files come from `--data-dir` / $MATHDISTILL_DATA (laid out like ../shared/data);
without a local copy, the same benchmarks come from the Hugging Face hub. `mawps` is the four
MAWPS sets together (multiarith, addsub, singleeq, singleop; ids like `addsub-test-3` say which).

A bad file is an InputError naming file:line (XML: the problem's ID): a folder or an empty file
where records are expected, malformed records, an empty question, a repeated id, or a gold
answer that is not a number in a dataset whose answers are numbers (all but MATH-500, whose
answers are LaTeX, and ASDiv, some of whose answers are words or times).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from mathdistill.answers import normalize_answer, parse_number
from mathdistill.io import InputError, iter_jsonl
from mathdistill.paths import DATA_ENV
from mathdistill.paths import data_dir as resolve_data_dir

__all__ = ["Problem", "DATASETS", "GROUPS", "load", "gsm8k_gold", "available"]


@dataclass
class Problem:
    id: str
    question: str
    answer: str  # gold answer, normalised (see mathdistill.answers.normalize_answer)
    source: str  # dataset name
    extra: dict = field(default_factory=dict)  # every other field of the original record

    def to_dict(self) -> dict:
        return asdict(self)


def gsm8k_gold(solution: str) -> str:
    """The gold answer of a GSM8K solution: what follows `####`, commas removed."""
    if "####" not in solution:
        raise ValueError("GSM8K solution has no '#### N' line")
    return normalize_answer(solution.split("####")[-1].strip().replace(",", ""))


def _asdiv_gold(raw: str) -> str:
    # "9 (apples)" -> "9"; "5 (hours);3 (minutes)" keeps both values: "5;3"
    parts = [re.sub(r"\s*\([^)]*\)\s*", " ", p).strip() for p in raw.split(";")]
    parts = [normalize_answer(p) or p for p in parts if p]
    return ";".join(parts)


def _join(body: str, question: str) -> str:
    body, question = body.strip(), question.strip()
    return f"{body} {question}".strip()


@dataclass
class Spec:
    files: dict[str, str]  # split -> path under the data root
    hub: tuple[str, str | None, dict[str, str]]  # (hub id, config, split -> hub split)
    row: Callable[[dict], tuple[str, str, dict]]  # record -> (question, gold, extra)
    id_key: str | None = None
    numeric: bool = True  # every gold answer is a number


def _gsm8k_row(r):
    return r["question"], gsm8k_gold(r["answer"]), {"solution": r["answer"]}


def _svamp_row(r):
    return _join(r["Body"], r["Question"]), normalize_answer(r["Answer"]), {
        k: r[k] for k in r if k not in ("Body", "Question", "Answer")
    }


def _mawps_row(r):
    return r["input"], normalize_answer(r["target"]), {}


def _gsm_hard_row(r):
    return r["input"], normalize_answer(r["target"]), {"code": r.get("code")}


def _math500_row(r):
    extra = {k: r[k] for k in ("solution", "subject", "level", "unique_id") if k in r}
    return r["problem"], normalize_answer(r["answer"]), extra


def _asdiv_row(r):
    return _join(r["Body"], r["Question"]), _asdiv_gold(r["Answer"]), {
        k: r[k] for k in r if k not in ("Body", "Question", "Answer")
    }


DATASETS: dict[str, Spec] = {
    "gsm8k": Spec(
        {"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl"},
        ("openai/gsm8k", "main", {"train": "train", "test": "test"}),
        _gsm8k_row,
    ),
    "svamp": Spec({"test": "svamp/SVAMP.json"}, ("ChilleD/SVAMP", None, {"test": "test"}), _svamp_row, "ID"),
    # ASDiv: 211 of 2,305 answers are words, times or several values ("Yes", "3:30 p.m", "5;3")
    "asdiv": Spec({"test": "asdiv/ASDiv.xml"}, ("EleutherAI/asdiv", None, {"test": "validation"}), _asdiv_row, "ID",
                  numeric=False),
    "multiarith": Spec({"test": "mawps/multiarith.jsonl"}, ("ChilleD/MultiArith", None, {"test": "test"}), _mawps_row),
    "addsub": Spec({"test": "mawps/addsub.jsonl"}, ("allenai/lila", "addsub", {"test": "test"}), _mawps_row),
    "singleeq": Spec({"test": "mawps/singleeq.jsonl"}, ("allenai/lila", "singleeq", {"test": "test"}), _mawps_row),
    "singleop": Spec({"test": "mawps/singleop.jsonl"}, ("allenai/lila", "singleop", {"test": "test"}), _mawps_row),
    "gsm_hard": Spec({"test": "gsm_hard/test.jsonl"}, ("reasoning-machines/gsm-hard", None, {"test": "train"}), _gsm_hard_row),
    "math500": Spec({"test": "math500/test.jsonl"}, ("HuggingFaceH4/MATH-500", None, {"test": "test"}), _math500_row,
                    "unique_id", numeric=False),
}
GROUPS = {"mawps": ("multiarith", "addsub", "singleeq", "singleop")}  # name -> datasets loaded one after another
ALIASES = {"gsm-hard": "gsm_hard", "gsmhard": "gsm_hard", "math-500": "math500", "mawps-multiarith": "multiarith"}


def _json_lines(text: str, n: int) -> list[int]:
    """The line on which each of the `n` records of a JSON list (already parsed) starts."""
    decoder, gap = json.JSONDecoder(), re.compile(r"[\s,]*")
    pos = text.index("[") + 1
    lines, line = [], text.count("\n", 0, pos) + 1
    for _ in range(n):
        start = gap.match(text, pos).end()
        line += text.count("\n", pos, start)
        lines.append(line)
        _, pos = decoder.raw_decode(text, start)
        line += text.count("\n", start, pos)
    return lines


def _read_records(path: Path) -> list[tuple[str, dict]]:
    """(location, record) pairs; location is 'file:line' (JSONL, JSON) or 'file:<ID>' (XML)."""
    if not path.is_file():
        raise InputError(f"{path}: is a folder; expected a data file")
    records = _parse(path)
    if not records:
        raise InputError(f"{path}: no problems in it (empty file)")
    return records


def _parse(path: Path) -> list[tuple[str, dict]]:
    if path.suffix == ".jsonl":
        return [(f"{path}:{n}", r) for n, r in iter_jsonl(path)]
    if path.suffix == ".json":
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{path}: not a UTF-8 text file") from None
        if not text.strip():
            return []
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
        if not isinstance(rows, list):
            raise InputError(f"{path}: expected a JSON list of records")
        return [(f"{path}:{line} (record {i})", r) for i, (line, r) in enumerate(zip(_json_lines(text, len(rows)), rows))]
    if path.suffix == ".xml":
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as e:
            raise InputError(f"{path}:{e.position[0]}: invalid XML ({e})") from None
        out = []
        for i, p in enumerate(root.iter("Problem")):
            rec = dict(p.attrib)
            for child in p:
                rec[child.tag] = (child.text or "").strip()
            out.append((f"{path}:<Problem ID={rec.get('ID', i)}>", rec))
        return out
    raise InputError(f"{path}: unsupported file type {path.suffix}")


def _to_problems(name: str, split: str, spec: Spec, records: list[tuple[str, dict]]) -> list[Problem]:
    problems, seen = [], {}
    for i, (where, rec) in enumerate(records):
        if not isinstance(rec, dict):
            raise InputError(f"{where}: expected a record (object), got {type(rec).__name__}")
        try:
            question, gold, extra = spec.row(rec)
        except KeyError as e:
            raise InputError(f"{where}: missing key {e}") from None
        except (ValueError, TypeError) as e:
            raise InputError(f"{where}: {e}") from None
        if not question or not str(question).strip():
            raise InputError(f"{where}: empty question")
        if gold is None or gold == "":
            raise InputError(f"{where}: empty gold answer")
        if spec.numeric and parse_number(gold) is None:
            raise InputError(f"{where}: gold answer {gold!r} is not a number (every {name} answer is a number)")
        pid = str(rec[spec.id_key]) if spec.id_key and spec.id_key in rec else f"{name}-{split}-{i}"
        if pid in seen:
            raise InputError(f"{where}: id {pid!r} again (first at {seen[pid]})")
        seen[pid] = where
        problems.append(Problem(pid, str(question).strip(), str(gold), name, extra))
    return problems


def _from_hub(name: str, split: str, spec: Spec, looked: str) -> list[Problem]:
    hub_id, config, splits = spec.hub
    try:
        from datasets import load_dataset

        ds = load_dataset(hub_id, config, split=splits[split])
    except Exception as e:  # network / hub errors
        raise InputError(
            f"dataset '{name}' split '{split}': {looked}, and the hub ({hub_id}) failed: {e}"
        ) from None
    records = []
    for i, r in enumerate(ds):
        r = dict(r)
        # hub copies name some fields differently from the local files
        if name == "svamp" and "question_concat" in r and "Body" not in r:
            r["Body"], r["Question"] = r.get("Body", ""), r["question_concat"]
        if name in ("addsub", "singleeq", "singleop", "multiarith") and "input" not in r:
            r = {"input": r.get("question") or r.get("input"), "target": r.get("final_ans") or r.get("answer")}
        if name == "asdiv" and "Body" not in r:
            r = {"Body": r.get("body", ""), "Question": r.get("question", ""), "Answer": r.get("answer", "")}
        records.append((f"{hub_id}[{split}][{i}]", r))
    return _to_problems(name, split, spec, records)


def available() -> list[str]:
    return sorted([*DATASETS, *GROUPS])


def load(
    name: str,
    split: str = "test",
    data_dir: str | Path | None = None,
    limit: int | None = None,
) -> list[Problem]:
    """Load `name`'s `split` as Problems, from the local data root or else the hub (first `limit` only)."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in DATASETS and key not in GROUPS:
        raise InputError(f"unknown dataset '{name}'; known: {', '.join(available())}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit must be an integer >= 1 (got {limit!r})")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise InputError(f"--data-dir {data_dir}: not a folder")
    splits = DATASETS[GROUPS[key][0] if key in GROUPS else key].files
    if split not in splits:
        raise InputError(f"dataset '{key}' has no split '{split}'; it has: {', '.join(splits)}")
    if key in GROUPS:
        return [p for part in GROUPS[key] for p in load(part, split, data_dir)][:limit]
    spec = DATASETS[key]
    root = resolve_data_dir(data_dir)
    if root is not None:
        path = root / spec.files[split]
        if path.exists():
            problems = _to_problems(key, split, spec, _read_records(path))
        elif data_dir is not None:
            raise InputError(f"dataset '{key}' split '{split}': looked for {path} (from --data-dir) and found nothing")
        else:
            problems = _from_hub(key, split, spec, f"no local copy at {path}")
    else:
        looked = f"no local data root (--data-dir, ${DATA_ENV} or ../shared/data)"
        problems = _from_hub(key, split, spec, looked)
    return problems[:limit] if limit is not None else problems
