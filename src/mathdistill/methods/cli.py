"""`mathdistill run RECIPE.yaml [key=value ...]`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer


def run_command(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML, e.g. recipes/quickstart.yaml")],
    overrides: Annotated[Optional[list[str]], typer.Argument(help="key=value overrides, e.g. train.max_steps=20")] = None,
    restart: Annotated[bool, typer.Option(help="redo every stage (the teacher cache still saves requests)")] = False,
) -> None:
    """Run a recipe end to end in its run folder; re-running the same command resumes it."""
    from mathdistill.methods import METHODS
    from mathdistill.methods.config import load_config

    cfg = load_config(recipe, overrides or [])
    run_dir = METHODS[cfg.method](cfg, command=["mathdistill", "run", *sys.argv[2:]], restart=restart)
    typer.echo(f"run folder: {run_dir}")
    typer.echo(f"report: {run_dir / 'report' / 'index.html'}")
