"""The `mathdistill` command. Thin: each command lives beside the stage it drives."""

from __future__ import annotations

import sys

import typer

from mathdistill.eval.cli import eval_command
from mathdistill.io import InputError
from mathdistill.methods.cli import run_command
from mathdistill.report.cli import report_command
from mathdistill.student.cli import train_command
from mathdistill.teacher.cli import teach_command
from mathdistill.thoughts.cli import score_command

app = typer.Typer(
    name="mathdistill",
    help="Distil mathematical reasoning from a teacher LLM into a small student, and measure it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("eval", help="Evaluate a student on a benchmark.")(eval_command)
app.command("score", help="Score rationales written elsewhere (bring your own teacher data).")(score_command)
app.command("teach", help="Collect and verify teacher rationales.")(teach_command)
app.command("train", help="Fine-tune a student (LoRA or full) on prompt/completion data.")(train_command)
app.command("run", help="Run a distillation recipe end to end.")(run_command)
app.command("report", help="Write an HTML/Markdown report for one or more run folders.")(report_command)


def main() -> None:
    """Console entry point: bad input ends with a one-line message and exit code 2, no traceback."""
    try:
        app()
    except InputError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
