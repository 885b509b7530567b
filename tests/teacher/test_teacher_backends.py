"""Backends other than the live server (replay, in-process HF, vLLM offline), config and header parsing."""

from __future__ import annotations

import json
import sys
import types

import pytest

from mathdistill.data import Problem, load
from mathdistill.io import InputError
from mathdistill.teacher import TeacherConfig, make_backend, teach
from mathdistill.teacher.backends import parse_retry_after
from mathdistill.teacher.config import TeacherConfig as TC

from teacher_helpers import problems


def test_replay_from_recorded_teacher_files(data_dir, cot, tmp_path):
    llama = data_dir / "teacher" / "gsm8k_train_llama3-70b_cot.json"
    gemini = data_dir / "teacher" / "gsm8k_train_gemini-1.5-flash_cot.json"
    probs = load("gsm8k", "train", data_dir=data_dir, limit=5)
    probs.append(Problem("made-up", "A question no teacher ever saw: what is 2 plus 2?", "4", "synthetic"))
    recorded = {normalize(r["instruction"]): r["output"] for r in json.loads(llama.read_text())}

    cfg = TeacherConfig(kind="replay", replay=[llama])
    res = teach(probs, [cot], make_backend(cfg), config=cfg, samples=2, out_dir=tmp_path / "one")
    rows = {(r["problem_id"], r["sample"]): r for r in res.rows}
    first = rows[(probs[0].id, 0)]
    assert first["text"] == recorded[normalize(probs[0].question)] and first["text"].rstrip().split()[-1].rstrip(".") == probs[0].answer
    assert sum(rows[(p.id, 0)]["correct"] for p in probs[:5]) >= 4  # recorded teachers are right ~97% of the time
    assert rows[("made-up", 0)]["text"] is None and rows[("made-up", 0)]["error"].startswith("replay miss: question not in")
    assert rows[(probs[0].id, 1)]["error"] == "replay miss: no recording #1 (have 1)"
    assert res.summary["misses"] == 5 + 2 and res.summary["failures"] == 0 and res.summary["cost"] == 0

    cfg2 = TeacherConfig(kind="replay", replay=[llama, gemini])  # sample k comes from file k
    res2 = teach(probs[:2], [cot], make_backend(cfg2), config=cfg2, samples=2)
    by = {(r["problem_id"], r["sample"]): r["text"] for r in res2.rows}
    gem = {normalize(r["instruction"]): r["output"] for r in json.loads(gemini.read_text())}
    assert by[(probs[0].id, 0)] == recorded[normalize(probs[0].question)]
    assert by[(probs[0].id, 1)] == gem[normalize(probs[0].question)]


def normalize(q: str) -> str:
    return " ".join(q.split()).lower()


def test_replay_bad_file_names_the_record(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "q1", "output": "a"}, {"instruction": "q2"}]))
    with pytest.raises(InputError, match=r"bad.json\[1\]: missing key 'output'"):
        make_backend(TeacherConfig(kind="replay", replay=[bad]))
    notlist = tmp_path / "obj.json"
    notlist.write_text("{}")
    with pytest.raises(InputError, match="expected a JSON list"):
        make_backend(TeacherConfig(kind="replay", replay=[notlist]))
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(InputError, match="empty.json: no recorded rationales in it"):
        make_backend(TeacherConfig(kind="replay", replay=[empty]))


@pytest.mark.slow
def test_hf_backend_in_process(student, cot, tmp_path):
    from mathdistill.teacher.backends import HFBackend

    import torch

    model, tok = student
    cfg = TeacherConfig(kind="hf", model="smollm2-135m", max_tokens=8)
    backend = HFBackend(cfg, model=model, tokenizer=tok)
    probs = problems(1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy 2-core machine, 2 OpenMP threads generate ~30x slower
    try:
        res = teach(probs, [cot], backend, config=cfg, cache=tmp_path / "c.sqlite")
    finally:
        torch.set_num_threads(threads)
    for r in res.rows:
        assert isinstance(r["text"], str) and r["text"].strip()
        assert r["finish_reason"] in ("stop", "length") and 0 < r["usage"]["completion_tokens"] <= 8
        assert r["usage"]["prompt_tokens"] > 5
    again = teach(probs, [cot], backend, config=cfg, cache=tmp_path / "c.sqlite")
    assert again.summary["requests"] == 0 and again.summary["cache_hits"] == 1
    assert [r["text"] for r in again.rows] == [r["text"] for r in res.rows]


def test_vllm_backend_without_vllm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(InputError, match=r"pip install 'mathdistill\[vllm\]'"):
        make_backend(TeacherConfig(kind="vllm", model="some/model"))


def test_vllm_backend_calls_llm_chat_in_batches(monkeypatch, cot, tmp_path):
    """Up to the library call: what mathdistill hands vLLM, and how it reads vLLM's outputs."""
    calls = {}

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class LLM:
        def __init__(self, model, **kw):
            calls["model"] = model

        def chat(self, conversations, sampling_params, use_tqdm):
            calls.setdefault("chats", []).append((conversations, [p.kw for p in sampling_params]))
            out = types.SimpleNamespace
            return [
                out(prompt_token_ids=[1] * 7, outputs=[out(text=f"The answer is {c[-1]['content'].split()[1][:-1]}", finish_reason="stop", token_ids=[1, 2, 3])])
                for c in conversations
            ]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    cfg = TeacherConfig(kind="vllm", model="org/teacher", temperature=0.6, max_tokens=99, concurrency=2)
    backend = make_backend(cfg)
    assert calls["model"] == "org/teacher" and backend.model == "vllm:org/teacher"
    probs = problems(3)
    res = teach(probs, [cot], backend, config=cfg, samples=2, cache=tmp_path / "c.sqlite")
    (convs, params), = calls["chats"]  # one batched call for all six requests
    assert len(convs) == 6 and convs[0] == cot.teacher_messages(probs[0].question)
    assert params[0] == {"temperature": 0.6, "max_tokens": 99, "seed": 0} and params[1]["seed"] == 1
    assert all(r["usage"] == {"prompt_tokens": 7, "completion_tokens": 3} for r in res.rows)
    assert [r["prediction"] for r in res.rows if r["sample"] == 0] == ["0", "1", "2"]
    again = teach(probs, [cot], backend, config=cfg, samples=2, cache=tmp_path / "c.sqlite")
    assert len(calls["chats"]) == 1 and again.summary["cache_hits"] == 6


def test_retry_after_header_forms():
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    import email.utils
    import time

    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after({"retry-after": soon}) <= 31
    assert parse_retry_after({"retry-after": "soon"}) is None and parse_retry_after({}) is None


def test_config_file_overrides_and_errors(tmp_path):
    f = tmp_path / "teacher.yaml"
    f.write_text("url: http://127.0.0.1:9/v1\nmodel: m\nheaders: {X-Org: abc}\nprices: {m: {prompt: 0.5, completion: 1.5}}\nconcurrency: 4\n")
    cfg = TC.from_file(f, concurrency=16, temperature=None)
    assert cfg.concurrency == 16 and cfg.price("m").cost({"prompt_tokens": 2_000_000, "completion_tokens": 1_000_000}) == 2.5
    assert cfg.public_dict()["headers"] == {"X-Org": "<redacted>"}
    f.write_text("url: http://127.0.0.1:9/v1\nmodel: m\nconcurency: 4\n")
    with pytest.raises(InputError, match=r"teacher.yaml: concurency: Extra inputs"):
        TC.from_file(f)
    f.write_text("kind: openai\nurl: http://127.0.0.1:9/v1\n")
    with pytest.raises(InputError, match="needs both url and model"):
        TC.from_file(f)


def test_transport_choice_and_missing_aiohttp(monkeypatch):
    import asyncio

    from mathdistill.teacher.backends import OpenAIBackend

    async def client_of(transport):
        backend = OpenAIBackend(TeacherConfig(url="http://127.0.0.1:9/v1", model="m", transport=transport))
        try:
            return type(backend.client._client).__name__.lower()
        finally:
            await backend.aclose()

    assert "aiohttp" in asyncio.run(client_of("auto"))  # installed with openai[aiohttp]
    assert "aiohttp" not in asyncio.run(client_of("httpx"))
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # as if not installed
    assert "aiohttp" not in asyncio.run(client_of("auto"))
    with pytest.raises(InputError, match="aiohttp is not installed"):
        asyncio.run(client_of("aiohttp"))
    with pytest.raises(Exception, match="transport"):
        TeacherConfig(url="http://x/v1", model="m", transport="curl")
