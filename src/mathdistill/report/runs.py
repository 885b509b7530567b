"""Read a run folder (layout in the run-folder contract) into plain Python objects.

Everything is optional except the folder being a run folder: a run that has not reached a
stage yet simply has nothing for it, and the report says "not run yet".
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import yaml

from mathdistill.io import InputError, iter_jsonl, read_json

STAGES = ("teach", "verify", "data", "train", "eval", "report")
MAX_SCAN = 5000  # rows read from a JSONL file when looking for example rows


@dataclass
class ThoughtData:
    """teach/<thought>/: the teacher's rationales for one reasoning format."""

    name: str
    summary: dict | None
    examples: list[dict]  # up to one correct and one wrong rationale


@dataclass
class AdapterData:
    """train/<adapter>/: one trained adapter."""

    name: str
    log: list[dict]
    summary: dict | None


@dataclass
class EvalData:
    """eval/<dataset>/<variant>/: one evaluation."""

    dataset: str
    variant: str
    metrics: dict | None
    examples: list[dict]  # up to one correct and one wrong prediction


@dataclass
class Run:
    path: Path
    name: str
    method: str
    student: str | None
    config: dict
    config_text: str | None
    manifest: dict | None
    done: set[str]
    thoughts: list[ThoughtData] = field(default_factory=list)
    data_summary: dict | None = None
    adapters: list[AdapterData] = field(default_factory=list)
    evals: list[EvalData] = field(default_factory=list)
    results: dict | None = None

    def stage_state(self, stage: str) -> str:
        """'done', 'in progress' (outputs or some per-item markers exist), 'skipped' (nothing,
        but a later stage has started: the recipe has no such stage) or 'not run yet'.

        A stage is done by its marker `stage.done`, or, for a stage marked per item
        (`teach-cot.done`, ...), when every item it has (the config's thoughts for teach) is marked."""
        if stage in self.done:
            return "done"
        marked = {d[len(stage) + 1 :] for d in self.done if d.startswith(f"{stage}-")}
        outputs = self._outputs(stage)
        if marked:
            items = set(self.thoughts_planned if stage == "teach" else [])
            items |= {getattr(o, "name", "") for o in outputs or []}
            return "done" if items <= marked else "in progress"
        if outputs:
            return "in progress"
        later = STAGES[STAGES.index(stage) + 1 : -1] if stage in STAGES else ()
        if any(s in self.done or self._outputs(s) or any(d.startswith(f"{s}-") for d in self.done) for s in later):
            return "skipped"
        return "not run yet"

    def _outputs(self, stage: str):
        return {"teach": self.thoughts, "data": self.data_summary, "train": self.adapters, "eval": self.evals}.get(stage)

    @property
    def thoughts_planned(self) -> list[str]:
        return [str(t) for t in self.config.get("thoughts") or [] if isinstance(t, (str, int))]

    def rows(self) -> list[dict]:
        """Accuracy rows (results.json "rows" format plus `run`): eval metrics first, then any
        results.json row for a (dataset, variant) that has no eval folder."""
        train_seconds = sum(a.summary.get("seconds") or 0 for a in self.adapters if a.summary) or None
        rows, seen = [], set()
        for ev in self.evals:
            if ev.metrics is None:
                continue
            m = ev.metrics
            rows.append(
                {
                    "run": self.name,
                    "method": self.method,
                    "dataset": ev.dataset,
                    "variant": ev.variant,
                    "n": m.get("n"),
                    "correct": m.get("correct"),
                    "accuracy": m["accuracy"],
                    "ci95": m.get("ci95"),
                    "train_seconds": train_seconds,
                }
            )
            seen.add((ev.dataset, ev.variant))
        for r in (self.results or {}).get("rows", []):
            if (r.get("dataset"), r.get("variant")) not in seen:
                rows.append({"run": self.name, "method": self.method, **r})
        return rows


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() or (path / "manifest.json").is_file()


def load_run(path: str | Path) -> Run:
    """Load one run folder; InputError if it is not one or a file in it is malformed."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: not a folder (expected a run folder written by `mathdistill run`)")
    if not is_run_dir(path):
        raise InputError(f"{path}: not a run folder (no config.yaml or manifest.json in it)")

    config_text, config = None, {}
    if (path / "config.yaml").is_file():
        config_text = (path / "config.yaml").read_text(encoding="utf-8")
        try:
            config = yaml.safe_load(config_text) or {}
        except yaml.YAMLError as e:
            line = getattr(getattr(e, "problem_mark", None), "line", None)
            where = f":{line + 1}" if line is not None else ""
            raise InputError(f"{path / 'config.yaml'}{where}: invalid YAML") from None
        if not isinstance(config, dict):
            raise InputError(f"{path / 'config.yaml'}: expected a mapping at the top level")
    manifest = _json_dict(path / "manifest.json")
    results = _json_dict(path / "results.json")
    for i, row in enumerate((results or {}).get("rows") or []):
        where = f"{path / 'results.json'}: rows[{i}]"
        if not isinstance(row, dict) or not row.get("dataset") or not row.get("variant"):
            raise InputError(f"{where}: expected an object with 'dataset' and 'variant'")
        _check_accuracy(row, where)

    student = config.get("student")
    student = student.get("model") if isinstance(student, dict) else student
    run = Run(
        path=path,
        name=str(config.get("name") or (results or {}).get("run") or path.name),
        method=str(config.get("method") or (results or {}).get("method") or "?"),
        student=student or (results or {}).get("student"),
        config=config,
        config_text=config_text,
        manifest=manifest,
        done={p.name[: -len(".done")] for p in (path / "stages").glob("*.done")},
        results=results,
    )

    order = run.thoughts_planned
    for d in sorted(_subdirs(path / "teach"), key=lambda d: _rank(order, d.name)):
        run.thoughts.append(ThoughtData(d.name, _json_dict(d / "summary.json"), _examples(d / "rationales.jsonl")))
    run.data_summary = _json_dict(path / "data" / "summary.json")
    for d in sorted(_subdirs(path / "train"), key=lambda d: _rank(order, d.name)):
        log = [r for r in _jsonl(d / "train_log.jsonl") if isinstance(r.get("loss"), (int, float))]
        run.adapters.append(AdapterData(d.name, log, _json_dict(d / "train_summary.json")))
    for ds in _subdirs(path / "eval"):
        for var in sorted(_subdirs(ds), key=lambda d: _rank(order, d.name)):
            metrics = _json_dict(var / "metrics.json")
            if metrics is not None:
                _check_accuracy(metrics, str(var / "metrics.json"))
            run.evals.append(EvalData(ds.name, var.name, metrics, _examples(var / "predictions.jsonl")))
    return run


def _check_accuracy(row: dict, where: str) -> None:
    """`accuracy` a number and `ci95` absent, null or two numbers."""
    if not isinstance(row.get("accuracy"), (int, float)):
        raise InputError(f"{where}: missing or non-numeric key 'accuracy'")
    c = row.get("ci95")
    if c is not None and not (isinstance(c, list) and len(c) == 2 and all(isinstance(v, (int, float)) for v in c)):
        raise InputError(f"{where}: 'ci95' must be two numbers, got {c!r}")


def _rank(order: list[str], name: str) -> tuple:
    """Sort key: thoughts in config order, then other names alphabetically, "vote" last."""
    return (name == "vote", name not in order, order.index(name) if name in order else 0, name)


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")) if path.is_dir() else []


def _json_dict(path: Path) -> dict | None:
    if not path.is_file():
        return None
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _jsonl(path: Path, limit: int | None = None) -> Iterator[dict]:
    """Rows of a JSONL file that a running stage may still be appending to (an unfinished last
    line is skipped); nothing if the file does not exist yet."""
    if path.is_file():
        rows = (row for _, row in iter_jsonl(path, skip_partial=True))
        yield from itertools.islice(rows, limit)


def _examples(path: Path) -> list[dict]:
    """The first correct and the first wrong row (whichever exist) among the first MAX_SCAN."""
    found: dict[bool, dict] = {}
    for row in _jsonl(path, MAX_SCAN):
        found.setdefault(bool(row.get("correct")), row)
        if len(found) == 2:
            break
    return [found[k] for k in (True, False) if k in found]
