"""`mathdistill report RUN_DIR [RUN_DIR ...] [--out DIR]`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer


def report_command(
    run_dirs: Annotated[list[Path], typer.Argument(metavar="RUN_DIR", help="Run folders written by `mathdistill run`.", show_default=False)],
    out: Annotated[
        Optional[Path],
        typer.Option("--out", help="Output folder. Default: RUN_DIR/report for one run, ./report-<timestamp> for several."),
    ] = None,
) -> None:
    """Write index.html (self-contained, opens offline), report.md and PNG figures."""
    from mathdistill.report.render import write_report

    if out is None:
        out = run_dirs[0] / "report" if len(run_dirs) == 1 else Path(f"report-{time.strftime('%Y%m%d-%H%M%S')}")
    index = write_report(run_dirs, out)
    typer.echo(str(index))
