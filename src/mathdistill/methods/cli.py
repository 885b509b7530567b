"""`mathdistill run RECIPE.yaml [key=value ...]` and `mathdistill recipes`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from mathdistill.runtime import threads_option


def run_command(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML, e.g. recipes/quickstart.yaml")],
    overrides: Annotated[Optional[list[str]], typer.Argument(help="key=value overrides, e.g. train.max_steps=20")] = None,
    restart: Annotated[bool, typer.Option(
        help="start the run over: clear its folder (the teacher reply caches excepted, so no paid request is "
             "sent twice) and redo every stage")] = False,
    threads: Optional[int] = threads_option(),
    plan: Annotated[bool, typer.Option(
        "--plan", help="print what the recipe would ask of its teachers (requests per stage, less what the caches "
        "hold; tokens; cost at the configured prices) and of the student (training tokens, generation), then "
        "exit: nothing is sent or written")] = False,
    speeds: Annotated[Optional[Path], typer.Option(
        help="with --plan: a speeds file (benchmarks/results/gpu_speed.json) for the student's seconds")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="with --plan: the plan as one JSON object")] = False,
) -> None:
    """Run a recipe end to end in its run folder; re-running the same command resumes it."""
    from mathdistill import runtime
    from mathdistill.methods.registry import load_config
    from mathdistill.methods.runner import run

    cfg = load_config(recipe, overrides or [])
    if plan:
        from mathdistill.methods.plan import plan as make_plan, print_plan

        p = make_plan(cfg, speeds)
        typer.echo(json.dumps(p)) if as_json else print_plan(p)
        return
    runtime.set_threads(threads)
    run_dir = run(cfg, command=["mathdistill", "run", *sys.argv[2:]], restart=restart)
    typer.echo(f"run folder: {run_dir}", err=True)
    typer.echo(str(run_dir / "report" / "index.html"))


def recipes_command(
    method: Annotated[Optional[str], typer.Argument(help="one method; default: all")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List the methods with their config keys and defaults (recipes/<method>.yaml runs one)."""
    from mathdistill.io import InputError
    from mathdistill.methods.config import describe
    from mathdistill.methods.registry import METHODS

    if method is not None and method not in METHODS:
        raise InputError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    listing = {
        m.name: {"summary": m.summary, "config": m.config.__name__,
                 "keys": [{"key": k, "default": d, "help": h} for k, d, h in describe(m)]}
        for m in METHODS.values() if method in (None, m.name)
    }
    if as_json:
        typer.echo(json.dumps(listing, indent=1))
        return
    for name, m in listing.items():
        typer.echo(f"{name}: {m['summary']}  [{m['config']}]")
        width = max(len(k["key"]) for k in m["keys"])
        for k in m["keys"]:
            typer.echo(f"  {k['key']:<{width}}  {k['default']}" + (f"   # {k['help']}" if k["help"] else ""))
        typer.echo("")
