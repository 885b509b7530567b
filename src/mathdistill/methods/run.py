"""Run folders: resumable stages, run scopes, and the manifest that records both (contract 6).

    run = Run.open(runs_dir / name, config, command)      # creates it, or reopens it to resume
    run.stage("train", lambda: ...)                          # skipped when done earlier
    r1 = run.scope("round-1"); r1.stage("train", ...)        # a sub-folder whose stages resume on their own
    run.finish()

The manifest (`manifest.json`, rewritten atomically on every change) is the one record of what
ran: for every stage (scoped ones as "round-1/train") its status (running, done, failed),
attempts, seconds, error and log file; for every scope its status and seconds. A stage counts as
done only when the manifest says so, so a crashed stage (status "failed", with the error and a
log holding the traceback) is redone on the next run and never mistaken for finished work.
Re-running with another config exits 2 naming the keys that differ (`--restart` starts over).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import yaml
from rich.console import Console

from mathdistill.io import InputError, read_json, write_json, write_text

console = Console(stderr=True)
log = logging.getLogger("mathdistill")
SCHEMA = 2
KEEP_ON_RESTART = ("teacher_cache.sqlite",)  # paid-for teacher replies survive --restart


class StageFailed(Exception):
    """A stage raised; the manifest records it. The message says where the log is and how to go on."""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("mathdistill", "torch", "transformers", "peft", "trl", "accelerate", "openai", "math-verify", "sympy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _git_revision() -> str | None:
    def git(*args):
        return subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)

    try:
        rev, dirty = git("rev-parse", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def config_diff(old: Any, new: Any, prefix: str = "", defaults: Any = None) -> list[str]:
    """Dotted keys whose values differ between two config mappings ("train.lr: 0.0002 -> 0.0003").
    A key missing from `old` whose new value is its entry in `defaults` (same shape as the configs) is
    no difference: the setting was added to the code after the run began and keeps its old behaviour."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        defaults = defaults if isinstance(defaults, dict) else {}
        for k in sorted(set(old) | set(new), key=str):
            if k not in old and k in defaults and new[k] == defaults[k]:
                continue
            out += config_diff(old.get(k), new.get(k), f"{prefix}{k}.", defaults.get(k))
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def _clear_for_restart(folder: Path) -> None:
    """Remove everything in `folder` except the teacher reply caches."""
    for p in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if p.is_file() or p.is_symlink():
            if not p.name.startswith(KEEP_ON_RESTART):
                p.unlink()
        elif p.is_dir() and not any(p.iterdir()):
            p.rmdir()


class _Manifest:
    """The run's manifest.json, shared by the run and all its scopes."""

    def __init__(self, path: Path, data: dict, on_stage: Callable[[str, Any], None] | None = None):
        self.path, self.data, self.on_stage = path, data, on_stage

    def save(self) -> None:
        write_json(self.path, self.data)

    def update(self, section: str, key: str, **fields) -> None:
        self.data.setdefault(section, {}).setdefault(key, {}).update(fields)
        self.save()


class Run:
    """A run folder, or a scope (sub-folder) inside one. Create with `Run.open`; scopes with `scope`."""

    def __init__(self, root: Path, manifest: _Manifest, prefix: str = ""):
        self.root, self.manifest, self.prefix = root, manifest, prefix
        self.dir = root / prefix if prefix else root

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, folder: str | Path, config: dict, command: list[str] | None = None, restart: bool = False,
             info: dict | None = None, defaults: dict | None = None,
             on_stage: Callable[[str, Any], None] | None = None) -> "Run":
        """Create the run folder for `config` (a JSON-able mapping; URLs with credentials are redacted before
        it is written), or reopen it.

        Reopening with another config is an InputError naming the keys that differ, unless `restart`,
        which clears the folder (teacher caches excepted) and starts over; a key the folder's config lacks
        is no difference when its value is its entry in `defaults` (see `config_diff`). `info` goes into
        the manifest (student provenance, ...). `on_stage(stage id, value)` is called after each stage finishes
        here (not for stages done earlier): e.g. a benchmark that writes rows as evaluations finish."""
        from mathdistill.secrets import redact

        folder = Path(folder)
        config = redact(config)
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{folder}: exists and is not a folder; pick another name= or runs_dir=")
        config_path, manifest_path = folder / "config.yaml", folder / "manifest.json"
        if restart and folder.is_dir():
            _clear_for_restart(folder)
        elif config_path.exists():
            try:
                old = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError:
                old = {}
            diff = config_diff(old, config, defaults=redact(defaults or {}))
            if diff:
                raise InputError(
                    f"{folder} holds a run with another config ({'; '.join(diff)}): resume it with the same recipe "
                    "and overrides, use a new name=..., or pass --restart to start it over"
                )
        folder.mkdir(parents=True, exist_ok=True)
        write_text(config_path, yaml.safe_dump(config, sort_keys=False))
        data = read_json(manifest_path) if manifest_path.exists() else {}
        if data.get("schema") != SCHEMA:
            data = {"schema": SCHEMA, "started": _now(), "resumed": []}
        else:
            data["resumed"].append(_now())
        data.update(
            name=config.get("name"), method=config.get("method"), command=redact(list(command or sys.argv)),
            seed=config.get("seed"), git_revision=_git_revision(), versions=_versions(),
            machine={"platform": platform.platform(), "cpus": os.cpu_count()},
            status="running", finished=None, **(info or {}),
        )
        data.setdefault("stages", {})
        data.setdefault("scopes", {})
        manifest = _Manifest(manifest_path, data, on_stage)
        manifest.save()
        return cls(folder, manifest)

    # ------------------------------------------------------------------ paths and scopes

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    def _id(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def scope(self, name: str) -> "Run":
        """A sub-folder (`round-1`, `iteration-2`, `adapter-kg`, ...) with stages of its own."""
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad scope name {name!r}")
        child = Run(self.root, self.manifest, self._id(name))
        entry = self.manifest.data["scopes"].get(child.prefix)
        if entry is None or entry.get("status") != "done":
            self.manifest.update("scopes", child.prefix, status="running", started=(entry or {}).get("started") or _now())
        return child

    def close_scope(self) -> None:
        """Mark this scope done (every stage in it finished)."""
        entry = self.manifest.data["scopes"].get(self.prefix, {})
        if entry.get("status") != "done":
            seconds = sum(s.get("seconds") or 0 for k, s in self.manifest.data["stages"].items()
                          if k.startswith(self.prefix + "/"))
            self.manifest.update("scopes", self.prefix, status="done", finished=_now(), seconds=round(seconds, 1))

    # ------------------------------------------------------------------ stages

    def done(self, name: str) -> bool:
        return self.manifest.data["stages"].get(self._id(name), {}).get("status") == "done"

    def stage(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run `fn` unless stage `name` is done in this folder, and return what it returned (a JSON-able
        value, kept in stages/<stage>.json: a stage skipped on resume returns the stored value).
        A failure is recorded (status, error, log with the traceback) and raised as StageFailed; the
        next run redoes the stage."""
        sid = self._id(name)
        out_rel = Path("stages", *sid.split("/")).with_suffix(".json").as_posix()
        if self.done(name):
            console.print(f"[dim]stage {sid}: done earlier, skipped[/dim]")
            out = self.root / out_rel
            return read_json(out)["value"] if out.is_file() else None
        entry = self.manifest.data["stages"].get(sid, {})
        log_rel = Path("logs", *sid.split("/")).with_suffix(".log").as_posix()
        log_path = self.root / log_rel
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.manifest.update("stages", sid, status="running", started=_now(), finished=None, error=None,
                             log=log_rel, attempts=entry.get("attempts", 0) + 1)
        console.rule(f"stage {sid}")
        handler = logging.FileHandler(log_path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        if log.level == logging.NOTSET or log.level > logging.INFO:
            log.setLevel(logging.INFO)
        t0 = time.perf_counter()
        try:
            result = fn()
        except BaseException as e:
            seconds = round(time.perf_counter() - t0, 1)
            with log_path.open("a", encoding="utf-8") as f:
                f.write(traceback.format_exc())
            error = f"{type(e).__name__}: {e}".strip()
            if isinstance(e, KeyboardInterrupt):
                error = "interrupted"
            self.manifest.update("stages", sid, status="failed", finished=_now(), seconds=seconds, error=error)
            self.manifest.data["status"] = "failed"
            self.manifest.save()
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            where = f"{self.root}/{log_rel}"
            hint = "fix what it names" if isinstance(e, InputError) else "see the log"
            raise StageFailed(
                f"stage {sid} failed: {error}\n  log: {where}\n  {hint}, then re-run the same command: "
                "finished stages are kept and this one starts again"
            ) from e
        finally:
            log.removeHandler(handler)
            handler.close()
        seconds = round(time.perf_counter() - t0, 1)
        write_json(self.root / out_rel, {"stage": sid, "value": result})
        self.manifest.update("stages", sid, status="done", finished=_now(), seconds=seconds, output=out_rel)
        console.print(f"stage {sid}: finished in {seconds:.1f}s")
        if self.manifest.on_stage is not None:
            self.manifest.on_stage(sid, result)
        return result

    def note(self, text: str) -> None:
        """A sentence every report of this run shows (an offline stand-in used, ...); kept once."""
        notes = self.manifest.data.setdefault("notes", [])
        if text not in notes:
            notes.append(text)
            self.manifest.save()

    def add_table(self, title: str, rows: list[dict]) -> None:
        """A method-specific table for results.json (replaces one of the same title)."""
        tables = [t for t in self.manifest.data.get("tables", []) if t["title"] != title]
        self.manifest.data["tables"] = tables + [{"title": title, "rows": rows}]
        self.manifest.save()

    def add_figure(self, file: str | Path, caption: str) -> None:
        """A figure (a file in the run folder) for results.json and the report."""
        rel = Path(file).resolve().relative_to(self.root.resolve()).as_posix()
        figures = [f for f in self.manifest.data.get("figures", []) if f["file"] != rel]
        self.manifest.data["figures"] = figures + [{"file": rel, "caption": caption}]
        self.manifest.save()

    def extras(self) -> dict:
        """What results.json carries besides rows: notes, tables and figures added by the recipe."""
        return {k: self.manifest.data.get(k, []) for k in ("notes", "tables", "figures")}

    def finish(self) -> None:
        self.manifest.data.update(status="finished", finished=_now())
        self.manifest.save()

    def clear(self, *parts: str) -> None:
        """Remove an output folder or file of this run (a stage that must start clean)."""
        p = self.path(*parts)
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
