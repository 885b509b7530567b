"""Run folders and resumable stages (contract 6 of DESIGN.md).

Every run writes into its own folder: the resolved config, a manifest (versions, seed, git
revision), stage outputs, adapters, evaluations and the report. A stage that finished leaves
`stages/<name>.done`; re-running the same command skips it.
"""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

from rich.console import Console

from mathdistill.io import InputError, read_json, write_json, write_text
from mathdistill.methods.config import RecipeConfig, dump_config

console = Console(stderr=True)


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("mathdistill", "torch", "transformers", "peft", "trl", "accelerate", "openai", "math-verify", "sympy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _git_revision() -> str | None:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Run:
    """One run folder. `Run(cfg)` creates it or reopens it for resuming."""

    def __init__(self, cfg: RecipeConfig, command: list[str] | None = None, restart: bool = False):
        self.cfg = cfg
        self.dir = cfg.run_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        config_text = dump_config(cfg)
        config_path = self.dir / "config.yaml"
        if config_path.exists() and not restart:
            old = config_path.read_text(encoding="utf-8")
            if old != config_text:
                raise InputError(
                    f"{self.dir} holds a run with a different config ({config_path}); "
                    "resume it with the same recipe and overrides, pick another name=..., or pass --restart"
                )
        if restart:
            for marker in (self.dir / "stages").glob("*.done"):
                marker.unlink()
        write_text(config_path, config_text)
        manifest_path = self.dir / "manifest.json"
        manifest = read_json(manifest_path) if manifest_path.exists() else {"started": _now(), "resumed": []}
        if manifest_path.exists():
            manifest["resumed"].append(_now())
        manifest.update(
            command=command or sys.argv,
            seed=cfg.seed,
            git_revision=_git_revision(),
            versions=_versions(),
            machine={"platform": platform.platform(), "cpus": __import__("os").cpu_count()},
            finished=None,
        )
        self.manifest = manifest
        write_json(manifest_path, manifest)

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    def done(self, stage: str) -> bool:
        return self.path("stages", f"{stage}.done").exists()

    def stage(self, name: str, fn: Callable[[], object]) -> None:
        """Run `fn` unless stage `name` already finished in this run folder."""
        if self.done(name):
            console.print(f"[dim]stage {name}: done earlier, skipped[/dim]")
            return
        console.rule(f"stage {name}")
        t0 = time.time()
        fn()
        write_text(self.path("stages", f"{name}.done"), f"{_now()} {time.time() - t0:.1f}s\n")
        console.print(f"stage {name}: finished in {time.time() - t0:.1f}s")

    def finish(self) -> None:
        self.manifest["finished"] = _now()
        write_json(self.path("manifest.json"), self.manifest)
