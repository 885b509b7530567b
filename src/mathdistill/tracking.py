"""Experiment tracking: training curves, evaluation metrics and the teacher's bill in the user's tracker.

    train: {report_to: tensorboard}          # or trackio, wandb, mlflow, a list of them; default none

`train.report_to` goes to the trainer (transformers' own callbacks log loss, learning rate, grad norm and
throughput every `logging_steps`), under the run folder's name (`run_name`: "<run>" for a run's one training,
"<run>/<scope>/<adapter>" for the others, e.g. a SIKeD iteration). When the recipe has finished, `log_run`
sends the same trackers the run's results: every result row's accuracy (`eval/<row>/<dataset>/accuracy`) and
what its teachers cost (`teacher/requests`, `teacher/cost_usd`, from the run folder's reply caches).

Where each tracker writes:
- tensorboard: event files beside what they describe: `<run>/train/<adapter>/tensorboard/` per training,
  `<run>/tensorboard/` for the results: `tensorboard --logdir runs/<run>` shows them all.
- trackio: its local store (`trackio show`), project "mathdistill"; wandb: $WANDB_PROJECT (default
  "mathdistill"), online or offline as wandb is set up; mlflow: $MLFLOW_TRACKING_URI (default ./mlruns),
  experiment $MLFLOW_EXPERIMENT_NAME (default "mathdistill").
The trackers are optional extras (`pip install 'mathdistill[track]'`), not dependencies: naming one that is
not installed is an InputError before anything runs.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Iterable, Literal, Union

from mathdistill.io import InputError

TRACKERS = ("tensorboard", "trackio", "wandb", "mlflow")
Tracker = Literal["tensorboard", "trackio", "wandb", "mlflow"]
#: the type of `train.report_to`: one tracker, "none", or a list of trackers
ReportTo = Union[Literal["none", "tensorboard", "trackio", "wandb", "mlflow"], list[Tracker]]
PROJECT = "mathdistill"
TB_DIR = "tensorboard"
_MODULES = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb", "mlflow": "mlflow"}


def trackers(report_to: ReportTo | None) -> list[str]:
    """The trackers `report_to` names ([] for none)."""
    if report_to in (None, "none"):
        return []
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    return list(dict.fromkeys(n for n in names if n != "none"))


def check(report_to: ReportTo | None, key: str = "train.report_to") -> None:
    """InputError when a tracker named is not installed (it is an optional extra)."""
    missing = [t for t in trackers(report_to) if importlib.util.find_spec(_MODULES[t]) is None]
    if missing:
        raise InputError(f"{key}: {', '.join(missing)} not installed: pip install 'mathdistill[track]' "
                         f"(or pip install {' '.join(missing)})")


def run_name(root: Path, out: Path) -> str:
    """The tracker's name of a training written to `out` inside run folder `root`: the run folder's name, plus
    the training's place in it when that is not the run's one `train/student`."""
    rel = [p for p in Path(out).resolve().relative_to(Path(root).resolve()).parts if p != "train"]
    return root.name if rel == ["student"] else "/".join([Path(root).name, *rel])


def trainer_setup(report_to: ReportTo | None, out_dir: Path) -> list[str] | str:
    """What the Trainer's `report_to` gets ("none" or the trackers), after pointing transformers' callbacks at
    their places (module docstring): TensorBoard's event files into `out_dir`/tensorboard, the project names."""
    names = trackers(report_to)
    if not names:
        return "none"
    check(report_to)
    if "tensorboard" in names:  # transformers reads it when the Trainer is made
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(out_dir) / TB_DIR)
    os.environ.setdefault("WANDB_PROJECT", PROJECT)
    os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", PROJECT)
    return names


def run_metrics(rows: Iterable[dict], teacher: dict | None) -> dict[str, float]:
    """The scalars `log_run` sends: each result row's accuracy (and n), the teacher's requests and cost."""
    out = {}
    for r in rows:
        base = f"eval/{r['method']}/{r['dataset']}"
        out[f"{base}/accuracy"] = float(r["accuracy"])
        out[f"{base}/n"] = float(r["n"])
    if teacher:
        out["teacher/requests"] = float(teacher["requests"])
        out["teacher/cost_usd"] = float(teacher["cost"])
    return out


def log_run(report_to: ReportTo | None, run_dir: Path, rows: list[dict], teacher: dict | None = None) -> dict:
    """Send a finished run's results (`run_metrics`) to the trackers `report_to` names, under the run folder's
    name; returns the scalars sent ({} when none)."""
    names = trackers(report_to)
    if not names:
        return {}
    check(report_to)
    metrics = run_metrics(rows, teacher)
    name = Path(run_dir).name
    for t in names:
        globals()[f"_log_{t}"](Path(run_dir), name, metrics)
    return metrics


def _log_tensorboard(run_dir: Path, name: str, metrics: dict) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(run_dir / TB_DIR)) as w:
        for k, v in metrics.items():
            w.add_scalar(k, v, 0)


def _log_trackio(run_dir: Path, name: str, metrics: dict) -> None:
    import trackio

    trackio.init(project=PROJECT, name=name, resume="allow")
    trackio.log(metrics)
    trackio.finish()


def _log_wandb(run_dir: Path, name: str, metrics: dict) -> None:
    import wandb

    run = wandb.init(project=os.environ.get("WANDB_PROJECT", PROJECT), name=name, group=name, job_type="results")
    run.summary.update(metrics)
    run.log(metrics)
    run.finish()


def _log_mlflow(run_dir: Path, name: str, metrics: dict) -> None:
    import mlflow

    mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", PROJECT))
    with mlflow.start_run(run_name=name):
        mlflow.log_metrics({k.replace("+", "_plus_"): v for k, v in metrics.items()})
