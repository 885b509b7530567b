"""`mathdistill serve (RUN_DIR | --model M [--adapter A])`: an OpenAI-compatible server (contract 10).

Everything a user can get wrong (the run folder, the adapter, the key's variable, the address) is
checked before the model loads; once it listens, stdout gets one JSON line: {"url", "models"}.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from mathdistill.runtime import threads_option


def serve_command(
    run_dir: Optional[Path] = typer.Argument(None, help="A run folder written by `mathdistill run`: serves its result "
                                             "rows' names (e.g. etd, etd:cot, etd:pot, etd:eot)."),
    model: Optional[str] = typer.Option(None, "--model", help="Serve this model instead (HF id, local folder, .gguf "
                                        "file or alias)."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="With --model: a PEFT adapter folder, merged into "
                                           "the weights."),
    thought: list[str] = typer.Option(["cot"], "--thought", help="With --model: formats it answers in (repeat or "
                                      "comma-separate); several are also served as their majority vote."),
    name: str = typer.Option("student", "--name", help="With --model: the served name (NAME, and NAME:FORMAT for "
                             "each of several formats)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port (0: any free one; the JSON line says which)."),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="NAME of an environment variable holding the "
                                              "key clients must send (Authorization: Bearer KEY); none: no check."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", min=1, help="Tokens per reply when a request "
                                                 "does not say (default: the run's eval.max_new_tokens, else 256)."),
    shots: Optional[int] = typer.Option(None, "--shots", min=0, help="k-shot exemplars before each question (default: "
                                        "the run's eval.shots, else 0)."),
    loop_stop: Optional[bool] = typer.Option(None, "--loop-stop/--no-loop-stop", help="End a reply that repeats one "
                                             "block 3 times (default: the run's eval.loop_stop, else on)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data root for k-shot exemplars."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Rows generated together (default: the "
                                             "run's eval.batch_size, else 16)."),
    batch_wait_ms: float = typer.Option(10.0, "--batch-wait-ms", min=0.0, help="How long an idle server waits for more "
                                        "requests to batch with the first."),
    max_concurrency: int = typer.Option(64, "--max-concurrency", min=1, help="Requests answered at once."),
    max_waiting: int = typer.Option(1024, "--max-waiting", min=0, help="Requests queued beyond those (more: 503)."),
    max_body: int = typer.Option(1 << 20, "--max-body", min=1024, help="Largest request body, bytes (more: 413)."),
    max_tokens: int = typer.Option(4096, "--max-tokens", min=1, help="Largest max_tokens a request may ask for."),
    calculator: bool = typer.Option(False, "--calculator", help="Calculator decoding for every completion: the "
                                    "value of each arithmetic step the student writes (`a op b =`, `<<expr=`) is "
                                    "computed and forced; each choice's `mathdistill.calculator_interventions` (and "
                                    "usage's) counts them. Without it, only a run's `<name>+calc` rows "
                                    "(eval.calculator) use it."),
    threads: Optional[int] = threads_option(),
) -> None:
    """Serve a distilled student over an OpenAI-compatible API (/v1/models, /v1/chat/completions,
    /v1/completions); each served name is a result row of the run and answers with its inference."""
    from dataclasses import replace

    from mathdistill import runtime
    from mathdistill.io import InputError
    from mathdistill.serve import Defaults, load_engine, served_model, served_run
    from mathdistill.serve.inference import model_cards
    from mathdistill.serve.app import Limits, create_app, listen, run_server

    if (run_dir is None) == (model is None):
        raise InputError("give a run folder (mathdistill serve RUN_DIR) or --model M, not both" if run_dir
                         else "nothing to serve: give a run folder (mathdistill serve RUN_DIR) or --model M")
    key = None
    if api_key_env is not None:
        key = os.environ.get(api_key_env, "").strip()
        if not key:
            raise InputError(f"--api-key-env {api_key_env}: that environment variable is not set (or empty)")
    if run_dir is not None:
        if adapter is not None or thought != ["cot"] or name != "student":
            raise InputError("--adapter, --thought and --name go with --model; a run folder says what it serves")
        served, cfg, run = served_run(run_dir)
        defaults, base = Defaults.of(cfg), served.model or cfg.student.model
    else:
        if adapter is not None:
            from mathdistill.student.adapters import check_adapter

            check_adapter(adapter, "--adapter")
        served = served_model(model, adapter, [t for v in thought for t in v.split(",") if t.strip()], name)
        defaults, base, run = Defaults(), model, None  # EvalConfig's defaults
    defaults = replace(defaults, **{k: v for k, v in {"max_new_tokens": max_new_tokens, "shots": shots,
                                                      "loop_stop": loop_stop, "batch_size": batch_size,
                                                      "data_dir": str(data_dir) if data_dir else None}.items()
                                    if v is not None}, calculator=calculator)
    sock = listen(host, port)  # the address is checked before the model loads
    runtime.set_threads(threads)
    engine = load_engine(served, base, defaults, wait=batch_wait_ms / 1000)
    for t in {f for inf in served.models.values() for f in getattr(inf, "formats", ())}:
        engine.exemplars(t)  # k-shot exemplars (and their data) checked before listening

    def ready(app) -> None:
        shown = f"[{host}]" if ":" in host else host
        typer.echo(json.dumps({"url": f"http://{shown}:{app.state.port}/v1", "models": list(served.models)}))

    limits = Limits(max_body, max_concurrency, max_waiting, max_tokens)
    cards = model_cards(served.models, run, base)
    run_server(create_app(engine, served.models, limits, key, on_ready=ready, cards=cards), sock)
