"""Student sampling: k completions per problem in one format, each scored by the evaluation's judge.

    res = sample(model, tok, problems, "pot", k=4, temperature=0.7, top_p=0.95, seed=0, out_dir="runs/x/s")
    res.rows[0]["outputs"], res.rows[0]["corrects"]     # k of each, in the order of `problems`
    res.stats["generated"], res.stats["tokens_per_second"]

Who uses it: FDD (easy/hard split of the training problems by the student's own results), SIKeD
(the student's own correct solutions per strategy: `prefill="[PoT]\\n"` forces a strategy by
starting the completion with its tag), LoRID (re-sample only the unresolved problems), and
`mathdistill.eval.evaluate` (sample + majority vote + metrics).

- Prompts: the thought's zero-shot student prompt through the chat template, or `prompts` (one
  already-rendered prompt per problem, e.g. a question with knowledge). `prefill` (one text for
  all, or one per problem) starts every completion; it is part of the output that is scored.
- Scoring (`judge`): the thought's `score_batch` over every sample at once: PoT programs run in
  the sandbox, EoT systems are solved; keypoints on its solution's answer.
- Seeded: sample j of problem p draws from a stream seeded by (seed, p.id, j), so the same call
  gives the same samples whatever the batch size, the order, the other problems or where a
  killed run resumed (`student.generate`). Greedy (temperature 0) is today's `generate`.
- Resumable: with `out_dir`, each problem's finished samples are appended to
  `samples.partial.jsonl` as they come, keyed by what made them (weights, adapter, prompt,
  prefill, sampling settings, engine); a call finds them there or in `samples.jsonl` (a finished
  call's rows) and generates only what is missing. `samples.json` holds the stats.
- Engines: "hf" (`student.generate`, CPU or GPU: its slot engine, `student.engine`, where it runs;
  sampled rows keyed by it then, as its top-p draws differ from the batches'),
  "vllm" (`student.vllm_engine`: a `vllm.LLM`
  or a model name; adapters are folders, sent as LoRA requests), "auto": vllm when it is
  installed, CUDA is there and `model` is a name or a `vllm.LLM` (not a loaded transformers model)
  and no loop stop is asked for, else hf.
- Calculator (`calculator=True`, hf engine only): the value of every arithmetic step a completion
  writes is forced (`student.calculator`); each row then has `interventions` (one count per
  sample) and the stats the total and `interventions_per_answer`.
- Several processes (GPUs): `student.parallel.sample_parallel` (same arguments) under `accelerate
  launch` splits the problems over the processes and merges the same rows one process gives.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field

from mathdistill.io import InputError, check_out_dir, write_json, write_jsonl
from mathdistill.student.generate import DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS, check_settings, derive_seed
from mathdistill.student.prompts import build_prompts, check_thought

__all__ = ["SampleConfig", "SampleResult", "Cache", "sample", "judge", "read_generations", "pick_engine",
           "is_torch_model", "SAMPLES", "PARTIAL", "STATS", "ENGINES"]

SAMPLES, PARTIAL, STATS = "samples.jsonl", "samples.partial.jsonl", "samples.json"
ENGINES = ("auto", "hf", "vllm")


class SampleConfig(BaseModel):
    """How a student samples: `sample`'s defaults, and the options of the sampling command (`student.parallel`,
    built from these fields by `runtime.config_option`)."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(1, ge=1, description="samples per problem")
    temperature: float = Field(0.0, ge=0, description="sampling temperature; 0: greedy")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass in (0, 1] (with temperature > 0)")
    seed: int = Field(0, ge=0, description="seed of the samples: sample j of problem p draws from (seed, p.id, j)")
    max_new_tokens: int = Field(DEFAULT_MAX_NEW_TOKENS, ge=1, description="most tokens generated per completion")
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, description="completions generated together")
    loop_stop: bool = Field(False, description="end a completion that repeats one block 3 times in a row")


DEFAULTS = SampleConfig()


@dataclass
class SampleResult:
    rows: list[dict]  # one per problem: id, question, gold, outputs, predictions, corrects, errors, num_tokens, looped
    stats: dict


def judge(thought: str):
    """The evaluation's scorer for `thought`: `score(outputs, golds) -> [Scored]`, batched (PoT
    programs run in parallel). keypoints is judged on its solution's answer."""
    from mathdistill import thoughts

    fmt = thoughts.get(thought)
    return fmt.score_batch if fmt.gives_answer else functools.partial(thoughts.Thought.score_batch, fmt)


def read_generations(path: Path, keys: dict[str, str]) -> dict[str, dict]:
    """Generations in a partial or finished samples file whose row key is `keys[row id]`:
    {id: {"texts", "num_tokens", "looped"}} (and "interventions" when the calculator made them).
    Lines cut short by a kill are skipped."""
    found: dict[str, dict] = {}
    if not path.is_file():
        return found
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(row, dict) or row.get("id") not in keys or row.get("key") != keys[row["id"]]:
                continue
            texts = row.get("texts") or row.get("outputs")
            found[row["id"]] = {"texts": texts, "num_tokens": row["num_tokens"],
                                "looped": row.get("looped") or [False] * len(texts)}
            if "interventions" in row:
                found[row["id"]]["interventions"] = row["interventions"]
    return found


class Cache:
    """Generations kept between calls: `found` ({id: {"texts", "num_tokens", "looped"}}, made with
    the same settings) are reused; each new one is appended to `path` (opened on the first one)
    as {"key": keys[id], "id", "texts", "num_tokens", "looped"}. `path=None`: nothing kept."""

    def __init__(self, path: Path | None = None, keys: dict[str, str] | None = None, found: dict | None = None):
        self.path, self.keys, self.found, self._file = path, keys or {}, dict(found or {}), None

    def add(self, pid: str, gen: dict) -> None:
        self.found[pid] = gen
        if self.path is None:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(json.dumps({"key": self.keys[pid], "id": pid, **gen}, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _key(settings: dict, *texts: str) -> str:
    blob = json.dumps(settings, sort_keys=True) + "".join("\x00" + t for t in texts)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def is_torch_model(model) -> bool:
    """Whether `model` is a loaded torch model (not a name or a `vllm.LLM`)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return isinstance(model, torch.nn.Module)


def pick_engine(engine: str, model, loop_stop: bool = False, calculator: bool = False) -> str:
    """"hf" or "vllm" for `engine` (see the module doc); InputError for one that cannot run here."""
    from mathdistill.student import vllm_engine

    if engine not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(ENGINES)} (got {engine!r})")
    if engine == "auto":
        import torch

        named = isinstance(model, (str, Path)) or type(model).__module__.startswith("vllm")
        use = named and not loop_stop and not calculator and vllm_engine.installed() and torch.cuda.is_available()
        return "vllm" if use else "hf"
    if engine == "vllm":
        if not vllm_engine.installed():
            raise InputError("engine vllm: vLLM is not installed (pip install vllm; it needs a CUDA GPU)")
        if loop_stop:
            raise InputError("engine vllm: loop_stop is only available with engine hf")
        if calculator:
            raise InputError("engine vllm: calculator decoding is only available with engine hf (it forces tokens "
                             "inside the project's own generation loop); use engine hf or leave the calculator off")
        if is_torch_model(model):
            raise InputError("engine vllm: pass a model name or a vllm.LLM, not a loaded transformers model")
    return engine


def _slots(model) -> bool:
    """Whether `generate` samples on the slot engine for `model` (see `engine_run.use_slots`)."""
    from mathdistill.student.engine_run import use_slots

    return is_torch_model(model) and use_slots(None, model)


def _prefills(prefill, n: int) -> list[str]:
    if prefill is None:
        return [""] * n
    if isinstance(prefill, str):
        return [prefill] * n
    prefill = list(prefill)
    if len(prefill) != n or not all(isinstance(p, str) for p in prefill):
        raise InputError(f"prefill must be a string or one string per problem ({n}); got {len(prefill)} items")
    return prefill


def _default_weights(model, adapter, engine: str):
    """What identifies the weights when the caller did not say: see `adapters.weights_identity`."""
    from mathdistill.student.adapters import tensors_sha256, weights_identity

    if is_torch_model(model):
        return tensors_sha256(model)
    if isinstance(model, (str, Path)):
        folder = adapter if adapter not in (None, "base") and Path(adapter).is_dir() else None
        return weights_identity(str(model), folder)
    raise InputError("weights: say which weights these are (e.g. eval.weights_identity(model, adapter_dir)) "
                     "to keep samples in out_dir with a vllm.LLM")


def sample(
    model,
    tokenizer,
    problems: Sequence,
    thought: str,
    *,
    k: int = DEFAULTS.k,
    temperature: float = DEFAULTS.temperature,
    top_p: float = DEFAULTS.top_p,
    seed: int | None = DEFAULTS.seed,
    max_new_tokens: int | None = None,
    batch_size: int | None = None,
    adapter: str | None = None,
    prompts: Sequence[str] | None = None,
    prefill: str | Sequence[str] | None = None,
    stop: Sequence[str] | None = None,
    weights=None,
    out_dir=None,
    engine: str = "auto",
    loop_stop: bool = DEFAULTS.loop_stop,
    progress: bool = True,
    cache: Cache | None = None,
    calculator: bool = False,
) -> SampleResult:
    """k samples of each of `problems` (`mathdistill.data.Problem`s) in `thought`, scored.

    `adapter`: hf engine: a PeftModel adapter name, "base" or None (as `generate`); vllm engine:
    an adapter folder. `weights` identifies the weights in the resume key (default: the tensors'
    sha256 for a loaded model, `weights_identity(name, adapter)` for a name). `cache` replaces
    the files in `out_dir` by the caller's own (what `evaluate` does). Every input is checked
    before anything is generated or written. `max_new_tokens` / `batch_size` None: SampleConfig's.
    `calculator`: see the module doc.
    """
    problems = _unique(problems)
    thought = check_thought(thought)
    max_new_tokens = DEFAULTS.max_new_tokens if max_new_tokens is None else max_new_tokens
    batch_size = DEFAULTS.batch_size if batch_size is None else batch_size
    check_settings(k=k, max_new_tokens=max_new_tokens, batch_size=batch_size, temperature=temperature, top_p=top_p)
    if prompts is not None and len(prompts) != len(problems):
        raise InputError(f"{len(prompts)} prompts for {len(problems)} problems")
    prefills = _prefills(prefill, len(problems))
    out = check_out_dir(out_dir) if out_dir is not None else None
    engine = pick_engine(engine, model, loop_stop, calculator)
    if tokenizer is None and isinstance(model, (str, Path)):
        from mathdistill.models import load_tokenizer

        tokenizer = load_tokenizer(model)
    if prompts is None:
        prompts = build_prompts(tokenizer, thought, [p.question for p in problems])
    prompts = list(prompts)
    gen = dict(k=k, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, batch_size=batch_size,
               stop=[s for s in (stop or []) if s], adapter=adapter, loop_stop=loop_stop)
    own = cache is None
    if own:
        cache = Cache()
        if out is not None:
            settings = _resume_settings(model, weights, engine, gen, seed, calculator)
            keys = {p.id: _key(settings, prompt, pre) for p, prompt, pre in zip(problems, prompts, prefills)}
            found = read_generations(out / SAMPLES, keys) | read_generations(out / PARTIAL, keys)
            cache = Cache(out / PARTIAL, keys, found)
    todo = [i for i, p in enumerate(problems) if p.id not in cache.found]
    t0 = time.perf_counter()
    try:
        if todo:
            seeds = [derive_seed(seed, problems[i].id) for i in todo] if seed is not None else None
            _generate(model, tokenizer, [prompts[i] + prefills[i] for i in todo], engine, gen, seeds, calculator,
                      progress, lambda j, g: _save(cache, problems[todo[j]].id, prefills[todo[j]], g, calculator))
    finally:
        if own:
            cache.close()
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    rows = _scored(problems, [cache.found[p.id] for p in problems], thought, calculator)
    tokens = sum(sum(cache.found[problems[i].id]["num_tokens"]) for i in todo)
    stats = _stats(rows, thought, engine, gen, seed, calculator, len(todo), tokens, seconds,
                   time.perf_counter() - t1)
    if own and out is not None:
        write_jsonl(out / SAMPLES, [{**r, "key": cache.keys[r["id"]]} for r in rows])
        write_json(out / STATS, stats)
        (out / PARTIAL).unlink(missing_ok=True)
    return SampleResult(rows, stats)


def _unique(problems: Sequence) -> list:
    problems = list(problems)
    if not problems:
        raise InputError("nothing to sample: the problem list is empty")
    if len({p.id for p in problems}) != len(problems):
        raise InputError("problem ids are not unique")
    return problems


def _resume_settings(model, weights, engine: str, gen: dict, seed, calculator: bool) -> dict:
    """What makes a problem's samples (its prompt and prefill aside): the key they are kept and found by."""
    temperature = gen["temperature"]
    settings = {
        "weights": weights if weights is not None else _default_weights(model, gen["adapter"], engine),
        "adapter": gen["adapter"], "engine": engine, "max_new_tokens": gen["max_new_tokens"], "k": gen["k"],
        "temperature": temperature, "top_p": gen["top_p"] if temperature > 0 else 1.0,
        "seed": seed if temperature > 0 else None, "stop": gen["stop"], "loop_stop": gen["loop_stop"],
    }
    if calculator:  # only when on, so samples saved earlier still resume
        settings["calculator"] = True
    if temperature > 0 and engine == "hf" and _slots(model):  # its top-p draws are its own
        settings["sampler"] = "slots"
    return settings


def _generate(model, tokenizer, prompts: list[str], engine: str, gen: dict, seeds, calculator: bool,
              progress: bool, on_result) -> None:
    """Generate `prompts` (each problem's prompt and prefill) with the engine, `on_result` as each is done."""
    adapter = gen["adapter"]
    if model is not None and isinstance(model, (str, Path)) and engine == "hf":
        model, adapter = _load_hf(model, adapter)
    run = _generate_hf if engine == "hf" else _generate_vllm
    run(model, tokenizer, prompts, on_result, **{**gen, "adapter": adapter}, seeds=seeds, progress=progress,
        **({"calculator": True} if calculator else {}))


def _save(cache: Cache, pid: str, prefill: str, g, calculator: bool) -> None:
    gen = {"texts": [prefill + t for t in g.texts], "num_tokens": list(g.num_tokens), "looped": list(g.looped)}
    if calculator:
        gen["interventions"] = list(g.interventions)
    cache.add(pid, gen)


def _scored(problems: list, done: list[dict], thought: str, calculator: bool) -> list[dict]:
    """One row per problem: its samples (the prefill included) scored by the thought's judge, all at once."""
    flat = [(p, t) for p, d in zip(problems, done) for t in d["texts"]]
    scored = judge(thought)([t for _, t in flat], [p.answer for p, _ in flat])
    rows, pos = [], 0
    for p, d in zip(problems, done):
        s = scored[pos : pos + len(d["texts"])]
        pos += len(d["texts"])
        rows.append({"id": p.id, "question": p.question, "gold": p.answer, "outputs": d["texts"],
                     "predictions": [x.prediction for x in s], "corrects": [bool(x.correct) for x in s],
                     "errors": [x.error for x in s], "num_tokens": list(d["num_tokens"]),
                     "looped": [bool(x) for x in d["looped"]]})
        if calculator:
            rows[-1]["interventions"] = list(d.get("interventions") or [0] * len(d["texts"]))
    return rows


def _stats(rows: list[dict], thought: str, engine: str, gen: dict, seed, calculator: bool, generated: int,
           tokens: int, seconds: float, score_seconds: float) -> dict:
    k, temperature = gen["k"], gen["temperature"]
    stats = {
        "thought": thought, "engine": engine, "k": k, "temperature": temperature,
        "top_p": gen["top_p"] if temperature > 0 else 1.0, "seed": seed if temperature > 0 else None,
        "max_new_tokens": gen["max_new_tokens"], "batch_size": gen["batch_size"], "adapter": gen["adapter"],
        "stop": gen["stop"], "loop_stop": gen["loop_stop"], "n": len(rows), "generated": generated,
        "reused": len(rows) - generated, "seconds": round(seconds, 3), "score_seconds": round(score_seconds, 3),
        "generated_tokens": tokens,
        "samples_per_second": generated * k / seconds if generated and seconds > 0 else None,
        "tokens_per_second": tokens / seconds if generated and seconds > 0 else None,
        "sample_accuracy": sum(sum(r["corrects"]) for r in rows) / (len(rows) * k),
        "pass_at_k": sum(any(r["corrects"]) for r in rows) / len(rows),
        "calculator": calculator,
    }
    if calculator:
        stats["interventions"] = sum(sum(r["interventions"]) for r in rows)
        stats["interventions_per_answer"] = stats["interventions"] / (len(rows) * k)
    return stats


def _load_hf(model, adapter):
    """A model name for the hf engine: loaded (merged with `adapter` when that is a folder)."""
    from mathdistill.student.adapters import load_merged

    folder = adapter if adapter not in (None, "base") and Path(adapter).is_dir() else None
    loaded, _ = load_merged(str(model), folder)
    return loaded, (None if folder else adapter)


def _generate_hf(model, tokenizer, prompts, on_result, *, k, seeds, **kw):
    from mathdistill.student import generate as gen

    return gen.generate(model, tokenizer, prompts, num_samples=k, seeds=seeds, on_result=on_result, **kw)


def _generate_vllm(model, tokenizer, prompts, on_result, **kw):
    from mathdistill.student import vllm_engine

    return vllm_engine.generate(model, prompts, on_result=on_result, **kw)
