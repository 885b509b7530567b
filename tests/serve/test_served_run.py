"""A tiny real ETD run served (heavy: run under flock): the official `openai` client, sync and async,
on each of the run's names gives what evaluation gave; streaming; the project's teacher engine
completes a `teach` run against the server; the `serve` command end to end; a method with its own
`serve` hook and two adapters (the loop of docs/adding-a-method.md); LoRID over three adapters."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import httpx
import openai
import pytest
from serve_helpers import LiveServer

from mathdistill.io import read_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(etd_run):
    from mathdistill.serve import Defaults, load_engine, served_run
    from mathdistill.serve.app import create_app

    spec, cfg, _ = served_run(etd_run)
    engine = load_engine(spec, cfg.student.model, Defaults.of(cfg))
    srv = LiveServer(create_app(engine, spec.models))
    srv.engine = engine
    yield srv
    srv.stop()


def evaluated(run_dir, variant: str) -> list[dict]:
    return read_jsonl(run_dir / "eval" / "gsm8k" / variant / "predictions.jsonl")


def chat(c, model, question, **kw):
    return c.chat.completions.create(model=model, messages=[{"role": "user", "content": question}], **kw)


def test_each_name_of_the_run_answers_as_evaluation_did(served, etd_run):
    c = openai.OpenAI(base_url=served.url, api_key="none", max_retries=0)
    results = json.loads((etd_run / "results.json").read_text())
    served = [m.id for m in c.models.list()]
    assert served == ["etd", "etd:cot", "etd:pot", "etd:eot"] and set(served) == {r["method"] for r in results["rows"]}
    for fmt in ("cot", "pot", "eot"):
        for row in evaluated(etd_run, fmt):
            r = chat(c, f"etd:{fmt}", row["question"])
            info = r.choices[0].model_extra["mathdistill"]
            assert r.choices[0].message.content == row["output"]
            assert info["answer"] == row["prediction"] and info["format"] == fmt
            if row["prediction"] is None:
                assert info["errors"][fmt] == row["error"]
    for row in evaluated(etd_run, "vote"):
        info = chat(c, "etd", row["question"]).choices[0].model_extra["mathdistill"]
        assert info["answer"] == row["prediction"] and info["format"] == row["chosen_format"]
        assert info["answers"] == {f: a[0] for f, a in row["answers"].items()}


def test_concurrent_async_requests_are_batched_and_give_the_same_answers(served, etd_run):
    rows = evaluated(etd_run, "cot")

    async def main():
        c = openai.AsyncOpenAI(base_url=served.url, api_key="none", max_retries=0)
        rs = await asyncio.gather(*(chat(c, "etd:cot", r["question"]) for r in rows * 4))
        await c.close()
        return rs

    before = dict(served.engine.batcher.stats)
    rs = asyncio.run(main())
    assert [r.choices[0].message.content for r in rs] == [r["output"] for r in rows] * 4
    stats = served.engine.batcher.stats
    calls = stats["generate_calls"] - before["generate_calls"]
    assert calls < len(rs) and stats["largest_call"] > 1  # requests shared generate calls


def test_streaming_gives_the_same_text_as_a_plain_reply(served, etd_run):
    c = openai.OpenAI(base_url=served.url, api_key="none", max_retries=0)
    row = evaluated(etd_run, "cot")[0]
    chunks = [ch for ch in chat(c, "etd:cot", row["question"], stream=True) if ch.choices]
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == row["output"]
    assert len([ch for ch in chunks if ch.choices[0].delta.content]) > 1  # token by token, not at once
    assert chunks[-1].choices[0].model_extra["mathdistill"]["answer"] == row["prediction"]


def test_the_teacher_engine_completes_a_teach_run_against_the_server(served, data_dir, tmp_path):
    out = tmp_path / "teach"
    cmd = [sys.executable, "-m", "mathdistill.cli", "teach", "--dataset", "gsm8k", "--split", "train", "--limit", "3",
           "--thought", "pot", "--teacher-url", served.url, "--teacher-model", "etd:pot", "--max-tokens", "24",
           "--out", str(out), "--data-dir", str(data_dir), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OPENAI_API_KEY": "x"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_jsonl(out / "rationales.jsonl")
    assert len(rows) == 3 and all(r["thought"] == "pot" and isinstance(r["text"], str) for r in rows)
    summary = json.loads((out / "teach_summary.json").read_text())
    assert summary["requests"] == 3


def test_the_serve_command_end_to_end(etd_run):
    proc = subprocess.Popen([sys.executable, "-m", "mathdistill.cli", "serve", str(etd_run), "--port", "0",
                             "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = json.loads(proc.stdout.readline())
        assert ready["models"] == ["etd", "etd:cot", "etd:pot", "etd:eot"]
        models = httpx.get(ready["url"] + "/models").json()
        assert [m["id"] for m in models["data"]] == ready["models"]
        card = models["data"][0]["mathdistill"]  # where its training data came from (contract 9), no local path
        assert card["training_data"]["offline_stand_in"] is True and set(card["training_data"]["teacher"]) == {
            "cot", "pot", "eot"} and card["base_model"]["name"] == "model" and card["run"] == etd_run.name
        r = httpx.post(ready["url"] + "/completions", json={"model": "etd:cot", "prompt": "What is 2 + 3?",
                                                             "max_tokens": 4}, timeout=60)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 4, r.text
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr.read()[-2000:]


def test_a_run_evaluated_with_and_without_the_calculator_serves_both(tmp_path, student_path, data_dir):
    """`eval.calculator: both` gives rows `<name>` and `<name>+calc`; served, each `+calc` name answers as
    its evaluation did (calculator decoding on for it alone) and the plain names as theirs did."""
    from tiny_run import tiny_run

    from mathdistill.serve import Defaults, load_engine, served_run
    from mathdistill.serve.app import create_app

    run_dir = tiny_run(tmp_path, student_path, data_dir, "calc", ["eval.calculator=both",
                                                                 "data.eval=[{dataset: gsm8k, split: test, limit: 2}]"])
    spec, cfg, _ = served_run(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    names = ["etd", "etd:cot", "etd:pot", "etd:eot"]
    assert list(spec.models) == names + [n + "+calc" for n in names]
    assert set(spec.models) == {r["method"] for r in results["rows"]}
    engine = load_engine(spec, cfg.student.model, Defaults.of(cfg))
    srv = LiveServer(create_app(engine, spec.models))
    try:
        c = openai.OpenAI(base_url=srv.url, api_key="none", max_retries=0)
        for calc in ("", "+calc"):
            for row in evaluated(run_dir, "cot" + calc):
                r = chat(c, "etd:cot" + calc, row["question"])
                info = r.choices[0].model_extra["mathdistill"]
                assert r.choices[0].message.content == row["output"] and info["answer"] == row["prediction"]
                assert info.get("calculator_interventions") == row.get("interventions")
            for row in evaluated(run_dir, "vote" + calc):
                assert chat(c, "etd" + calc, row["question"]).choices[0].model_extra["mathdistill"]["answer"] \
                    == row["prediction"]
    finally:
        srv.stop()


def test_a_method_with_its_own_serve_hook_and_two_adapters(heads_run, tokenizer):
    """The docs' loop over adapters ir and dr; each adapter alone gives what plain PEFT gives."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from mathdistill.serve import Defaults, load_engine, served_run
    from mathdistill.serve.app import create_app
    from mathdistill.student.chat import render_prompt

    spec, cfg, _ = served_run(heads_run)
    assert set(spec.models) == {"heads", "heads:ir"}  # the hook also names heads:dr, which is not a row
    engine = load_engine(spec, cfg.student.model, Defaults.of(cfg))
    srv = LiveServer(create_app(engine, spec.models))
    try:
        c = openai.OpenAI(base_url=srv.url, api_key="none", max_retries=0)
        q = "Tom has 3 apples and buys 4 more. How many apples does he have?"
        ir = chat(c, "heads:ir", q, max_tokens=12).choices[0].message.content
        loop = chat(c, "heads", q, max_tokens=12).choices[0]
        assert 1 <= loop.model_extra["mathdistill"]["rounds"] <= 3
    finally:
        srv.stop()
    from mathdistill import thoughts

    prompt = render_prompt(tokenizer, thoughts.get("cot").student_prompt(q))
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    for name, text in [("ir", ir)]:
        base = AutoModelForCausalLM.from_pretrained(cfg.student.model)
        model = PeftModel.from_pretrained(base, str(heads_run / "train" / name)).eval()
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
        assert tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True) == text


def test_lorid_is_served_over_three_real_adapters(heads_run, tokenizer, tmp_path):
    """`methods.lorid.serve` on three random adapters of one base (none merged): lorid:ir is what
    plain PEFT gives with adapter ir; lorid:dr reads kg's knowledge; the loop reports its iterations."""
    from types import SimpleNamespace

    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from mathdistill.methods.lorid import LoopConfig
    from mathdistill.methods.lorid import serve as serve_lorid
    from mathdistill.serve import Context, Defaults, load_engine
    from mathdistill.serve.app import create_app
    from mathdistill.student.chat import prompt_token_ids

    base = str(heads_run.parent.parent / "model")
    for i, role in enumerate(("ir", "kg", "dr")):
        torch.manual_seed(10 + i)
        lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
        get_peft_model(AutoModelForCausalLM.from_pretrained(base), lora).save_pretrained(tmp_path / "train" / role)
    cfg = SimpleNamespace(method="lorid", loop=LoopConfig(max_iterations=2, knowledge_max_new_tokens=6))
    spec = serve_lorid(cfg, SimpleNamespace(path=tmp_path))
    engine = load_engine(spec, base, Defaults(max_new_tokens=8))
    srv = LiveServer(create_app(engine, spec.models))
    q = "Tom has 3 apples and buys 4 more. How many apples does he have?"
    try:
        c = openai.OpenAI(base_url=srv.url, api_key="none", max_retries=0)
        ir = chat(c, "lorid:ir", q).choices[0]
        dr = chat(c, "lorid:dr", q).choices[0].model_extra["mathdistill"]
        loop = chat(c, "lorid", q).choices[0].model_extra["mathdistill"]
    finally:
        srv.stop()
    assert dr["knowledge"] and 1 <= loop["iterations"] <= 2 and len(loop["answers"]["ir"]) == loop["iterations"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(tmp_path / "train" / "ir")).eval()
    ids = prompt_token_ids(tokenizer, Context(engine).prompt("cot", q))
    out = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)
    assert tokenizer.decode(out[0, len(ids):], skip_special_tokens=True) == ir.message.content
