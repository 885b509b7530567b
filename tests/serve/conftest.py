"""Serve test fixtures: a scripted engine (the real tokenizer, prompts, answer extraction, sandbox and
vote, with scripted completions in place of a model) and an in-process uvicorn server."""

from __future__ import annotations


import pytest

from serve_helpers import LiveServer


@pytest.fixture(scope="session")
def tokenizer(student_path):
    from mathdistill.models import load_tokenizer

    return load_tokenizer(student_path)


@pytest.fixture
def live():
    """live(app) -> a started LiveServer, stopped after the test."""
    servers = []

    def start(app) -> LiveServer:
        servers.append(LiveServer(app))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def etd_run(tmp_path_factory, student_path, data_dir):
    """A tiny real ETD run folder (tests/serve/tiny_run.py)."""
    from tiny_run import tiny_run

    return tiny_run(tmp_path_factory.mktemp("etd"), student_path, data_dir)


# ---- a method with its own serve hook: docs/adding-a-method.md's loop over two adapters


def loop(ctx, question):  # two adapters answer until they agree, at most 3 rounds (as in the docs)
    from mathdistill.answers import is_equivalent
    from mathdistill.serve import Reply

    for k in range(3):
        a, b = (ctx.generate([ctx.prompt("cot", question)], adapter=n, temperature=0.7 if k else 0)[0]
                for n in ("ir", "dr"))
        x, y = ctx.extract("cot", [a.text, b.text])
        if x.prediction is not None and y.prediction is not None and is_equivalent(x.prediction, y.prediction):
            break
    return Reply(b.text, y.prediction, "cot", {"ir": x.prediction, "dr": y.prediction}, extra={"rounds": k + 1})


def heads_serve(cfg, run):
    from mathdistill.serve import Served, Single

    adapters = {n: run.path / "train" / n for n in ("ir", "dr")}
    return Served({cfg.method: loop, f"{cfg.method}:ir": Single("cot", adapter="ir"),
                   f"{cfg.method}:dr": Single("cot", adapter="dr")}, adapters)


def heads_recipe(cfg, run):
    """Two random LoRA adapters (seeded, PEFT directly), each evaluated: rows `heads` (dr) and `heads:ir`."""
    from mathdistill.methods import steps

    def make(name, seed):
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        torch.manual_seed(seed)
        lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
        get_peft_model(AutoModelForCausalLM.from_pretrained(cfg.student.model), lora).save_pretrained(
            run.path("train", name))
        return name

    for i, name in enumerate(("ir", "dr")):
        run.stage(f"adapter-{name}", lambda name=name, i=i: make(name, i + 1))
    rows = steps.evaluate(run, cfg, "heads:ir", run.path("train", "ir"), ["cot"])
    return rows + steps.evaluate(run, cfg, "heads", run.path("train", "dr"), ["cot"], folder="eval-dr")


@pytest.fixture(scope="session")
def heads_run(tmp_path_factory, student_path, data_dir):
    from tiny_run import tiny_model

    from mathdistill.methods.config import RecipeConfig
    from mathdistill.methods.registry import Method, load_config, register
    from mathdistill.methods.runner import run

    register(Method("heads", RecipeConfig, heads_recipe, "two adapters that answer until they agree",
                    serve=heads_serve))
    root = tmp_path_factory.mktemp("heads")
    model = tiny_model(root / "model", student_path, seed=3)
    cfg = load_config(None, [f"runs_dir={root / 'runs'}", f"student.model={model}", f"data.data_dir={data_dir}",
                             "data.eval=[{dataset: gsm8k, split: test, limit: 2}]", "eval.max_new_tokens=8"],
                      base={"name": "heads", "method": "heads"})
    return run(cfg, command=["heads"])
