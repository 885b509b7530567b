"""`mathdistill teach`: collect and verify teacher rationales; re-running resumes from the cache.

Exit 0: every request answered; 1: some still failed after their retries, or the budget (--max-cost,
--max-requests) held some back (the rest is kept); 2: bad input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mathdistill import runtime
from mathdistill.io import InputError, write_json


def _headers(values: list[str]) -> dict[str, str]:
    out = {}
    for v in values:
        name, sep, value = v.partition(":")
        if not sep or not name.strip():
            raise InputError(f"--header '{v}': expected 'Name: value'")
        out[name.strip()] = value.strip()
    return out


def _thought_names(values: list[str]) -> list[str]:
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    if not names:
        raise InputError("--thought: name at least one reasoning format (cot, pot, eot, l2m, knowledge, keypoints)")
    return names


def _positive(value: Optional[float]) -> Optional[float]:
    if value is not None and value <= 0:
        raise typer.BadParameter(f"must be > 0 (got {value:g})")
    return value


def _top_p(value: Optional[float]) -> Optional[float]:
    if value is not None and not 0 < value <= 1:
        raise typer.BadParameter(f"must be in (0, 1] (got {value:g})")
    return value


def teach_command(
    dataset: str = typer.Option(..., "--dataset", help="Benchmark to collect rationales for (gsm8k, svamp, ...)."),
    split: str = typer.Option("train", "--split", help="Split of the benchmark (train, test)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="First N problems only."),
    thought: list[str] = typer.Option(..., "--thought", help="cot|pot|eot|l2m|knowledge|keypoints (repeat or comma-separate)."),
    samples: int = typer.Option(1, "--samples", min=1, help="Rationales per problem per thought."),
    teacher_url: Optional[str] = typer.Option(
        None, "--teacher-url",
        help="OpenAI-compatible base URL (…/v1). user:password@ in it is sent as HTTP basic auth (in place of the key) and ?name=value "
        "parameters with every request; both are redacted in every file written."),
    teacher_model: Optional[str] = typer.Option(None, "--teacher-model", help="Model name on that server."),
    teacher_key_env: Optional[str] = typer.Option(
        None, "--teacher-key-env",
        help="NAME of the environment variable holding the API key (default: OPENAI_API_KEY when it is set, "
        "else no key, as local servers want). The key itself is never written."),
    header: list[str] = typer.Option([], "--header", help="Extra HTTP header 'Name: value' (repeatable; values are never written)."),
    replay: list[Path] = typer.Option([], "--replay", help="Recorded rationales (JSON list of {instruction, output}); sample k from file k."),
    hf_model: Optional[str] = typer.Option(None, "--hf-model", help="Run this model in-process with transformers."),
    vllm_model: Optional[str] = typer.Option(None, "--vllm-model", help="Run this model with vLLM offline (extra: vllm)."),
    teacher_config: Optional[Path] = typer.Option(None, "--teacher-config", help="YAML/JSON TeacherConfig; options given here override it."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", min=1, help="Requests in flight (default 8)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", min=0.0, help="Default 0 for one sample, 0.7 for several."),
    top_p: Optional[float] = typer.Option(None, "--top-p", callback=_top_p, help="Nucleus sampling, in (0, 1] (default: not sent)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1, help="Per reply (default 1024)."),
    rpm: Optional[float] = typer.Option(None, "--rpm", callback=_positive, help="Requests per minute limit (> 0; default none)."),
    tpm: Optional[float] = typer.Option(None, "--tpm", callback=_positive, help="Tokens per minute limit (> 0; default none)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", callback=_positive, help="Seconds per request (default 120)."),
    max_retries: Optional[int] = typer.Option(
        None, "--max-retries", min=0,
        help="Retries of a transient fault (default 6). A request still failing after them makes teach exit 1; "
        "what succeeded is kept, and the same command run again sends only the failed ones."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Sample k is requested with seed+k (default 0)."),
    price_prompt: Optional[float] = typer.Option(None, "--price-prompt", min=0.0, help="USD per 1M prompt tokens of this teacher."),
    price_completion: Optional[float] = typer.Option(None, "--price-completion", min=0.0, help="USD per 1M completion tokens."),
    mode: Optional[str] = typer.Option(
        None, "--mode", help="online (default) | batch: through the server's Files + Batches API at the batch price "
        "(batch ids kept in the reply cache: re-running after a kill resumes polling them)."),
    max_cost: Optional[float] = typer.Option(
        None, "--max-cost", callback=_positive, help="USD this folder's teacher replies may cost in all (needs the "
        "prices); stops before a request that could pass it, exit 1. Raise it and re-run to send the rest."),
    max_requests: Optional[int] = typer.Option(
        None, "--max-requests", min=1, help="Teacher replies this folder may pay for in all."),
    cancel_batches: bool = typer.Option(
        False, "--cancel-batches",
        help="Cancel the batches this folder's cache has open, keep what they answered, exit."),
    plan: bool = typer.Option(
        False, "--plan", help="Print the requests this would send (less what the cache holds), their tokens and cost; "
        "send and write nothing."),
    keep: str = typer.Option("correct", "--keep", help="Rows marked kept: correct | usable | all."),
    dedupe: str = typer.Option("normalized", "--dedupe", help="Drop repeated rationales: none | exact | normalized."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Reply cache (default OUT/teacher_cache.sqlite)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data root (default $MATHDISTILL_DATA, else ../shared/data)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar (on stderr)."),
    threads: Optional[int] = runtime.threads_option(),
    out: Path = typer.Option(..., "--out", help="Folder: writes OUT/rationales.jsonl, OUT/teach_summary.json, OUT/teach_config.json."),
) -> None:
    """Collect and verify teacher rationales; re-running resumes from the reply cache.

    Exit codes: 0 when every request was answered (wrong answers and replay misses included);
    exit code 1 when some requests still failed after their retries, or --max-cost / --max-requests held
    some back (the rest is written and cached: run the same command again, with a higher cap, to send only
    what is missing); 2 for bad input (nothing sent).
    """
    from mathdistill import data
    from mathdistill.teacher import config as C
    from mathdistill.teacher.backends import make_backend
    from mathdistill.teacher.budget import Limits
    from mathdistill.teacher.cache import FILE
    from mathdistill.teacher.engine import TeacherError, VerifyConfig, resolve_thoughts, teach

    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; expected a folder (teach writes rationales.jsonl and more into it)")
    if cache is not None and cache.is_dir():
        raise InputError(f"--cache {cache}: is a folder; expected the reply cache's file (e.g. {cache / 'teacher_cache.sqlite'})")
    for option, path in [("--teacher-config", teacher_config), *(("--replay", p) for p in replay)]:
        if path is not None and path.is_dir():
            raise InputError(f"{option} {path}: is a folder; expected a file")
    picked = [n for n, v in [("--teacher-url", teacher_url), ("--replay", replay), ("--hf-model", hf_model), ("--vllm-model", vllm_model)] if v]
    if len(picked) > 1:
        raise InputError(f"choose one teacher: got {', '.join(picked)}")
    if not picked and not teacher_config:
        raise InputError("no teacher: give --teacher-url and --teacher-model, --replay FILE, --hf-model or --teacher-config")
    if teacher_url and not teacher_model:
        raise InputError("--teacher-url needs --teacher-model")
    thoughts = resolve_thoughts(_thought_names(thought))
    if keep not in ("correct", "usable", "all"):
        raise InputError(f"--keep '{keep}': expected correct, usable or all")
    if dedupe not in ("none", "exact", "normalized"):
        raise InputError(f"--dedupe '{dedupe}': expected none, exact or normalized")

    settings: dict = {
        "concurrency": concurrency, "temperature": temperature, "top_p": top_p, "max_tokens": max_tokens,
        "rpm": rpm, "tpm": tpm, "timeout": timeout, "max_retries": max_retries, "seed": seed, "mode": mode,
    }
    if teacher_url:
        settings.update(kind="openai", url=teacher_url, model=teacher_model, key_env=teacher_key_env)
    elif replay:
        settings.update(kind="replay", replay=[str(p) for p in replay])
    elif hf_model or vllm_model:
        settings.update(kind="hf" if hf_model else "vllm", model=hf_model or vllm_model)
    if header:
        settings["headers"] = _headers(header)
    if teacher_config:
        cfg = C.TeacherConfig.from_file(teacher_config, **settings)
    else:
        cfg = C.build({k: v for k, v in settings.items() if v is not None}, where="teach options")
    if price_prompt is not None or price_completion is not None:
        prices = dict(cfg.prices)
        prices[cfg.model or ""] = C.Price(prompt=price_prompt or 0.0, completion=price_completion or 0.0)
        cfg = cfg.model_copy(update={"prices": prices})

    names = [t.name for t in thoughts]
    caps = Limits(max_cost, max_requests, out, cost_key="--max-cost", requests_key="--max-requests")
    if max_cost is not None:
        _check_price(cfg)
    if cancel_batches:
        return _cancel(cfg, cache or out / FILE)
    problems = data.load(dataset, split=split, data_dir=data_dir, limit=limit)
    if plan:
        return _plan(cfg, thoughts, problems, samples, cache or out / FILE, out, max_cost, max_requests)
    runtime.set_threads(threads)  # the in-process (--hf-model) teacher runs torch here
    backend = make_backend(cfg)
    write_json(out / "teach_config.json", {"dataset": dataset, "split": split, "limit": limit, "thoughts": names, "samples": samples, "teacher": cfg.public_dict()})
    try:
        result = teach(
            problems, thoughts, backend, config=cfg, samples=samples, out_dir=out, cache=cache,
            verify_config=VerifyConfig(keep=keep, dedupe=dedupe), progress=progress, budget=caps,
        )
    except TeacherError as e:  # the Batch API refused or kept failing: what was answered is in the cache
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    _print_summary(result.summary)
    keys = ("jobs", "requests", "cache_hits", "retries", "failures", "not_sent", "tokens", "cost", "cost_total")
    typer.echo(json.dumps({k: result.summary[k] for k in keys}))
    if result.budget:
        typer.secho(f"error: {result.budget}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    if result.failed:
        kept = f"{out / 'rationales.jsonl'}, reply cache {cache or out / 'teacher_cache.sqlite'}"
        typer.secho(f"error: {result.failure_message()}", fg=typer.colors.RED, err=True)
        typer.echo(f"What succeeded is kept ({kept}): run the same command again to send only the failed ones.", err=True)
        raise typer.Exit(1)


def _check_price(cfg) -> None:
    """--max-cost needs the teacher's price: exit 2 naming where to give it."""
    from mathdistill.teacher.budget import live

    if live(cfg) and (cfg.model or "") not in cfg.prices:
        raise InputError(f"--max-cost is set, but no price is known for {cfg.model}: give --price-prompt and "
                         f"--price-completion (USD per 1M tokens), or prices.{cfg.model} in --teacher-config")


def _plan(cfg, thoughts, problems, samples: int, cache_path: Path, out: Path, max_cost, max_requests) -> None:
    """--plan: the bill of every thought's requests (mathdistill.teacher.bill); nothing sent or written."""
    from mathdistill.teacher.bill import Stage, print_teacher_plan, teacher_plan

    stages = [Stage(f"teach {t.name}", t, cfg, problems, samples, cache_path) for t in thoughts]
    print_teacher_plan(teacher_plan(stages, out, max_cost, max_requests), f"Plan of teach in {out}")


def _cancel(cfg, cache_path: Path) -> None:
    """--cancel-batches: cancel the open batches in the reply cache and collect what they answered."""
    from mathdistill.teacher.backends import make_backend
    from mathdistill.teacher.cache import ReplyCache
    from mathdistill.teacher.engine import TeacherError, cancel, run_loop

    if not cache_path.is_file():
        raise InputError(f"--cancel-batches: no reply cache at {cache_path}: nothing was sent from this folder")
    backend = make_backend(cfg)
    with ReplyCache(cache_path) as store:
        async def main():
            try:
                return await cancel(backend, cfg, store)
            finally:
                await backend.aclose()

        try:
            done = run_loop(main())
        except TeacherError as e:
            typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
        typer.echo(json.dumps({**done, "batches": store.batches()}))


def _print_summary(s: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    console.print(
        f"teacher {s['teacher']}: {s['jobs']} jobs, {s['requests']} requests, {s['cache_hits']} cache hits, "
        f"{s['retries']} retries, {s['failures']} failures, {s['misses']} misses, {s['not_sent']} not sent (budget), "
        f"{s['length_cut']} cut at max_tokens; "
        f"{s['tokens']:,} tokens, ${s['cost']:.4f} this run (${s['cost_total']:.4f} in all), {s['wall_s']:.1f}s"
    )
    if s["faults"]:
        console.print("faults: " + ", ".join(f"{k} x{v}" for k, v in s["faults"].items()))
    table = Table("thought", "rows", "replied", "correct", "yield", "kept", "problems kept")
    for name, d in s["per_thought"].items():
        table.add_row(name, str(d["rows"]), str(d["replied"]), str(d["correct"]), f"{d['yield']:.1%}", str(d["kept"]), f"{d['problems_with_kept']}/{d['problems']}")
    console.print(table)
