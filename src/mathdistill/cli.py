"""The `mathdistill` command. Thin: each command lives beside the stage it drives."""

from __future__ import annotations

import sys

import typer

from mathdistill.eval.cli import eval_command
from mathdistill.io import InputError
from mathdistill.methods.cli import recipes_command, run_command
from mathdistill.report.cli import report_command
from mathdistill.serve.cli import serve_command
from mathdistill.serve.export import export_command
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


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"mathdistill {version('mathdistill')}")
        raise typer.Exit()


@app.callback()
def _options(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show library warnings and debug notes."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Distil mathematical reasoning from a teacher LLM into a small student, and measure it."""
    from mathdistill import runtime

    runtime.quiet(verbose)


app.command("eval", help="Evaluate a student on a benchmark.")(eval_command)
app.command("score", help="Score rationales written elsewhere (bring your own teacher data).")(score_command)
app.command("teach")(teach_command)
app.command("train", help="Fine-tune a student (LoRA or full) on prompt/completion data.")(train_command)
app.command("run", help="Run a distillation recipe end to end.")(run_command)
app.command("recipes")(recipes_command)
app.command("report", help="Write an HTML/Markdown report for one or more run folders.")(report_command)
app.command("serve", help="Serve a distilled student over an OpenAI-compatible API.")(serve_command)
app.command("export", help="Write a run's student as a Hugging Face model folder (+ GGUF).")(export_command)


def main() -> None:
    """Console entry point: bad input ends with a one-line message and exit code 2, no traceback; a
    recipe stage that crashed ends with its error, its log file and how to go on, exit code 1 (2 when
    bad input made it fail)."""
    from mathdistill.methods.run import StageFailed

    try:
        app()
    except InputError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except StageFailed as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2 if isinstance(e.__cause__, InputError) else 1)


if __name__ == "__main__":
    main()
