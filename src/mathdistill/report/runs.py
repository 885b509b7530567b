"""Read a run folder (docs/run-folder.md) into plain Python objects.

The manifest (schema 2) is the one record of what ran: the stages in the order they first ran
(with status, seconds, attempts, error and log), the scopes (`round-1`, `iteration-2`, ...) and
the run's own status. Everything else is read where the layout puts it, at the top level and in
every scope the manifest names: teach/<thought>/, data/, train/<adapter>/, eval*/<dataset>/<variant>/.
results.json (written when the recipe ends) holds the result rows, notes and method extras.

A folder written by an older mathdistill (manifest without `"schema": 2`) is refused with a clear
error rather than half-read: its stages were recorded as marker files this version no longer reads.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator

import yaml

from mathdistill.io import InputError, iter_jsonl, read_json

SCHEMA = 2
STAGE_STATUSES = ("running", "done", "failed")
RUN_STATUSES = ("running", "finished", "failed")
FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg", ".gif", ".webp")
MAX_SCAN = 5000  # rows read from a JSONL file when looking for example rows


@dataclass
class Stage:
    """One entry of the manifest's `stages` ("teach-cot", "round-1/train", ...)."""

    id: str
    status: str
    seconds: float | None = None
    attempts: int | None = None
    error: str | None = None
    log: str | None = None  # relative to the run folder
    started: str | None = None
    finished: str | None = None

    @property
    def scope(self) -> str | None:
        return self.id.rpartition("/")[0] or None


@dataclass
class Scope:
    """One entry of the manifest's `scopes`."""

    name: str
    status: str | None = None
    seconds: float | None = None


@dataclass
class ThoughtData:
    """[<scope>/]teach/<thought>/: the teacher's rationales for one reasoning format."""

    scope: str | None
    name: str
    summary: dict | None
    examples: list[dict]  # up to one correct and one wrong rationale

    @property
    def offline_stand_in(self) -> bool:
        return bool((self.summary or {}).get("offline_stand_in"))


@dataclass
class AdapterData:
    """[<scope>/]train/<adapter>/: one trained adapter."""

    scope: str | None
    name: str
    log: list[dict]
    summary: dict | None


@dataclass
class EvalData:
    """[<scope>/]eval*/<dataset>/<variant>/: one evaluation (folder relative to the run folder)."""

    folder: str
    metrics: dict | None
    examples: list[dict]  # up to one correct and one wrong prediction


@dataclass
class Run:
    path: Path
    name: str
    method: str
    status: str  # running | finished | failed (the manifest's)
    manifest: dict
    config: dict
    config_text: str | None
    student: dict  # provenance: name, file, sha256, quantisation, origin, ...
    stages: list[Stage]
    scopes: list[Scope]
    results: dict | None = None
    thoughts: list[ThoughtData] = field(default_factory=list)
    data: dict[str | None, dict] = field(default_factory=dict)  # scope -> data/summary.json
    adapters: list[AdapterData] = field(default_factory=list)
    evals: list[EvalData] = field(default_factory=list)

    @property
    def rows(self) -> list[dict]:
        """results.json rows (contract 9 names in `method`, optional `scope`)."""
        return list((self.results or {}).get("rows") or [])

    @property
    def notes(self) -> list[str]:
        return list((self.results or {}).get("notes") or [])

    @property
    def tables(self) -> list[dict]:
        return list((self.results or {}).get("tables") or [])

    @property
    def figures(self) -> list[dict]:
        return list((self.results or {}).get("figures") or [])

    @property
    def seconds(self) -> float:
        """Time spent in stages (the last attempt of each)."""
        return round(sum(s.seconds or 0 for s in self.stages), 1)

    @property
    def failed(self) -> list[Stage]:
        return [s for s in self.stages if s.status == "failed"]

    @property
    def running(self) -> list[Stage]:
        return [s for s in self.stages if s.status == "running"]

    def scope_order(self) -> list[str]:
        """The scopes that result rows name: in manifest order, then any the manifest lacks."""
        named = [str(r["scope"]) for r in self.rows if r.get("scope")]
        return list(dict.fromkeys([s.name for s in self.scopes if s.name in named] + named))


def load_run(path: str | Path) -> Run:
    """Load one run folder; InputError if it is not one, was written by an older mathdistill, or
    a file in it is malformed (the message names the file and the key)."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: not a folder (expected a run folder written by `mathdistill run`)")
    mpath = path / "manifest.json"
    if not mpath.is_file():
        raise InputError(f"{path}: not a run folder (no manifest.json in it)")
    manifest = _json_dict(mpath)
    schema = manifest.get("schema")
    if schema != SCHEMA:
        if isinstance(schema, int) and schema > SCHEMA:
            raise InputError(f"{mpath}: manifest schema {schema} was written by a newer mathdistill; upgrade to report it")
        raise InputError(
            f"{mpath}: written by an older mathdistill (manifest schema {schema or 1}, this version reads schema "
            f"{SCHEMA}); report it with the version that wrote it, or re-run its recipe into a new run folder"
        )
    status = manifest.get("status")
    if status not in RUN_STATUSES:
        raise InputError(f"{mpath}: 'status' must be one of {', '.join(RUN_STATUSES)}, got {status!r}")
    stages = [_stage(mpath, k, v) for k, v in _mapping(mpath, manifest, "stages").items()]
    scopes = [_scope(mpath, k, v) for k, v in _mapping(mpath, manifest, "scopes").items()]
    student = manifest.get("student")
    if student is not None and not isinstance(student, (dict, str)):
        raise InputError(f"{mpath}: 'student' must be an object, got {type(student).__name__}")

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
    results = _json_dict(path / "results.json")
    if results is not None:
        _check_results(path, results)
        student = student or results.get("student_provenance") or results.get("student")
    if isinstance(student, str):
        student = {"name": student}

    run = Run(
        path=path,
        name=str(manifest.get("name") or config.get("name") or path.name),
        method=str(manifest.get("method") or config.get("method") or "?"),
        status=status,
        manifest=manifest,
        config=config,
        config_text=config_text,
        student=student or {},
        stages=stages,
        scopes=scopes,
        results=results,
    )
    order = [str(t) for t in config.get("thoughts") or [] if isinstance(t, (str, int))]
    for scope in [None, *(s.name for s in scopes)]:
        base = path / scope if scope else path
        for d in sorted(_subdirs(base / "teach"), key=lambda d: _rank(order, d.name)):
            run.thoughts.append(ThoughtData(scope, d.name, _json_dict(d / "summary.json"), _examples(d / "rationales.jsonl")))
        data = _json_dict(base / "data" / "summary.json")
        if data is not None:
            run.data[scope] = data
        for d in sorted(_subdirs(base / "train"), key=lambda d: _rank(order, d.name)):
            log = [r for r in _jsonl(d / "train_log.jsonl") if isinstance(r.get("loss"), (int, float))]
            run.adapters.append(AdapterData(scope, d.name, log, _json_dict(d / "train_summary.json")))
        for top in (d for d in _subdirs(base) if d.name == "eval" or d.name.startswith("eval-")):
            for ds in _subdirs(top):
                for var in sorted(_subdirs(ds), key=lambda d: _rank(order, d.name)):
                    metrics = _json_dict(var / "metrics.json")
                    if metrics is not None:
                        _check_accuracy(metrics, str(var / "metrics.json"))
                    folder = var.relative_to(path).as_posix()
                    run.evals.append(EvalData(folder, metrics, _examples(var / "predictions.jsonl")))
    return run


# ---------------------------------------------------------------------------- validation


def _mapping(where: Path, obj: dict, key: str) -> dict:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{where}: '{key}' must be an object, got {type(value).__name__}")
    return value


def _number(where: str, entry: dict, key: str) -> None:
    v = entry.get(key)
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
        raise InputError(f"{where}: '{key}' must be a number, got {v!r}")


def _stage(mpath: Path, sid: str, entry) -> Stage:
    where = f"{mpath}: stages[{sid!r}]"
    if not isinstance(entry, dict):
        raise InputError(f"{where}: expected an object, got {type(entry).__name__}")
    if entry.get("status") not in STAGE_STATUSES:
        raise InputError(f"{where}: 'status' must be one of {', '.join(STAGE_STATUSES)}, got {entry.get('status')!r}")
    for key in ("seconds", "attempts"):
        _number(where, entry, key)
    keys = ("status", "seconds", "attempts", "error", "log", "started", "finished")
    return Stage(sid, **{k: entry.get(k) for k in keys})


def _scope(mpath: Path, name: str, entry) -> Scope:
    where = f"{mpath}: scopes[{name!r}]"
    if not isinstance(entry, dict):
        raise InputError(f"{where}: expected an object, got {type(entry).__name__}")
    _number(where, entry, "seconds")
    return Scope(name, entry.get("status"), entry.get("seconds"))


def _list(where: str, results: dict, key: str) -> list:
    value = results.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputError(f"{where}: '{key}' must be a list, got {type(value).__name__}")
    return value


def _check_results(path: Path, results: dict) -> None:
    where = str(path / "results.json")
    for i, row in enumerate(_list(where, results, "rows")):
        at = f"{where}: rows[{i}]"
        if not isinstance(row, dict) or not row.get("method") or not row.get("dataset"):
            raise InputError(f"{at}: expected an object with 'method' (the row name) and 'dataset'")
        if row.get("scope") is not None and not isinstance(row["scope"], str):
            raise InputError(f"{at}: 'scope' must be a string or null, got {row['scope']!r}")
        _check_accuracy(row, at)
        for key in ("n", "train_seconds", "train_steps", "train_tokens"):
            _number(at, row, key)
    for i, note in enumerate(_list(where, results, "notes")):
        if not isinstance(note, str):
            raise InputError(f"{where}: notes[{i}] must be a string, got {type(note).__name__}")
    for i, table in enumerate(_list(where, results, "tables")):
        at = f"{where}: tables[{i}]"
        if not isinstance(table, dict) or not isinstance(table.get("rows"), list):
            raise InputError(f"{at}: expected an object with 'title' and 'rows' (a list of objects)")
        if not all(isinstance(r, dict) for r in table["rows"]):
            raise InputError(f"{at}: 'rows' must be a list of objects")
    for i, fig in enumerate(_list(where, results, "figures")):
        at = f"{where}: figures[{i}]"
        if not isinstance(fig, dict) or not isinstance(fig.get("file"), str) or not fig["file"]:
            raise InputError(f"{at}: expected an object with 'file' (a path relative to the run folder) and 'caption'")
        rel = PurePosixPath(fig["file"])
        if rel.is_absolute() or ".." in rel.parts or "\\" in fig["file"]:
            raise InputError(f"{at}: 'file' must be a path inside the run folder, got {fig['file']!r}")
        if rel.suffix.lower() not in FIGURE_SUFFIXES:
            raise InputError(f"{at}: 'file' must be an image ({', '.join(FIGURE_SUFFIXES)}), got {fig['file']!r}")


def _check_accuracy(row: dict, where: str) -> None:
    """`accuracy` a number and `ci95` absent, null or two numbers."""
    if isinstance(row.get("accuracy"), bool) or not isinstance(row.get("accuracy"), (int, float)):
        raise InputError(f"{where}: missing or non-numeric key 'accuracy'")
    c = row.get("ci95")
    if c is not None and not (isinstance(c, list) and len(c) == 2 and all(isinstance(v, (int, float)) for v in c)):
        raise InputError(f"{where}: 'ci95' must be two numbers, got {c!r}")


# ---------------------------------------------------------------------------- reading


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


def log_tail(run: Run, stage: Stage, lines: int = 30) -> str | None:
    """The last `lines` lines of a stage's log (a crashed stage's traceback), if the log exists."""
    if not stage.log:
        return None
    p = (run.path / stage.log).resolve()
    if not p.is_file() or not p.is_relative_to(run.path.resolve()):
        return None
    text = p.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])
