"""Student sampling (`student.sample`): seeded samples that do not depend on batching, greedy equal
to `generate`, samples executed by the evaluation's judge, prefill, resume, and the vLLM engine
up to the library call (a fake `vllm` module)."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types

import pytest

from mathdistill.data import Problem
from mathdistill.eval import build_prompts
from mathdistill.io import InputError
from mathdistill.student.generate import derive_seed, generate
from mathdistill.student.sample import PARTIAL, SAMPLES, pick_engine, sample

PROBLEMS = [
    Problem("p1", "Tom has 3 apples and buys 4 more. How many apples does he have?", "7", "toy"),
    Problem("p2", "A farmer has 17 sheep, buys 5 more and sells 8. How many sheep are left?", "14", "toy"),
    Problem("p3", "Sara reads 12 pages a day. How many pages does she read in a week?", "84", "toy"),
    Problem("p4", "A box holds 6 eggs. How many eggs are in 9 boxes?", "54", "toy"),
]
SAMPLING = dict(k=2, temperature=1.0, top_p=0.95, max_new_tokens=16, progress=False)


def texts(res):
    return {r["id"]: r["outputs"] for r in res.rows}


@pytest.mark.slow
def test_seeded_samples_are_reproducible_and_independent_of_batching(student):
    model, tok = student
    ps = PROBLEMS[:3]
    a = sample(model, tok, ps, "cot", seed=3, batch_size=4, **SAMPLING)
    assert texts(a) == texts(sample(model, tok, ps, "cot", seed=3, batch_size=4, **SAMPLING))
    # one row at a time, and the problems in another order with one more among them: the same samples
    one = sample(model, tok, ps, "cot", seed=3, batch_size=1, **SAMPLING)
    assert texts(one) == texts(a)
    mixed = sample(model, tok, [PROBLEMS[3], *reversed(ps)], "cot", seed=3, batch_size=3, **SAMPLING)
    assert {pid: t for pid, t in texts(mixed).items() if pid != "p4"} == texts(a)
    # samples differ from each other and with the seed
    assert all(len(set(r["outputs"])) == 2 for r in a.rows)
    other = sample(model, tok, ps, "cot", seed=4, batch_size=4, **SAMPLING)
    assert all(texts(other)[pid] != t for pid, t in texts(a).items())
    assert [len(r["outputs"]) for r in a.rows] == [2, 2, 2] and all(1 <= n <= 16 for r in a.rows for n in r["num_tokens"])


@pytest.mark.slow
def test_greedy_sampling_is_todays_generate(student):
    model, tok = student
    prompts = build_prompts(tok, "cot", [p.question for p in PROBLEMS])
    want = [g.text for g in generate(model, tok, prompts, max_new_tokens=16, batch_size=4, progress=False)]
    res = sample(model, tok, PROBLEMS, "cot", k=2, max_new_tokens=16, batch_size=3, progress=False)
    assert [r["outputs"] for r in res.rows] == [[t, t] for t in want]
    assert res.stats["generated"] == 4 and res.stats["tokens_per_second"] > 0


@pytest.mark.slow
def test_prefilled_pot_and_eot_samples_are_executed(student):
    """The prefill starts every completion and is scored with it: the model only writes a
    comment after it (cut at the newline), so the answers come from running the program /
    solving the equations, and they are in no output's text."""
    model, tok = student
    ps = [Problem("a", "Multiply 1234 by 5678.", "7006652", "toy"), Problem("b", "Twice x, where x + 3 = 10?", "14", "toy")]
    pot = sample(model, tok, ps[:1], "pot", prefill="[PoT]\nans = 1234 * 5678  #", stop=["\n"], **SAMPLING)
    eot = sample(model, tok, ps[1:], "eot", prefill=["[EoT]\nx + 3 = 10\nans = 2 * x  %"], stop=["\n"], **SAMPLING)
    for res, tag, answer in [(pot, "[PoT]\n", "7006652"), (eot, "[EoT]\n", "14")]:
        [row] = res.rows
        assert all(o.startswith(tag) for o in row["outputs"]) and row["predictions"] == [answer, answer]
        assert row["corrects"] == [True, True] and not any(answer in o for o in row["outputs"])
    # what follows the prefill is the model's continuation of prompt + prefill
    prompt = build_prompts(tok, "pot", [ps[0].question])[0] + "[PoT]\nans = 1234 * 5678  #"
    [g] = generate(model, tok, [prompt], num_samples=2, seeds=[derive_seed(0, "a")], temperature=1.0, top_p=0.95,
                   max_new_tokens=16, stop=["\n"], progress=False)
    assert pot.rows[0]["outputs"] == ["[PoT]\nans = 1234 * 5678  #" + t for t in g.texts]
    assert pot.rows[0]["num_tokens"] == g.num_tokens


@pytest.mark.slow
def test_resume_generates_only_what_is_missing(student, tmp_path, monkeypatch):
    from mathdistill.student import generate as gen

    model, tok = student
    kw = dict(seed=5, batch_size=2, out_dir=tmp_path, **SAMPLING)
    full = sample(model, tok, PROBLEMS[:3], "cot", **{**kw, "out_dir": tmp_path / "uninterrupted"})
    real, calls = gen.generate, []

    def interrupted(model, tok, prompts, *, on_result, **more):  # dies once the first problem is saved
        def save(i, g):
            on_result(i, g)
            raise KeyboardInterrupt

        return real(model, tok, prompts, on_result=save, **more)

    monkeypatch.setattr(gen, "generate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sample(model, tok, PROBLEMS[:3], "cot", **kw)
    assert len((tmp_path / PARTIAL).read_text().splitlines()) == 1 and not (tmp_path / SAMPLES).exists()

    def spy(model, tok, prompts, **more):
        calls.append(len(prompts))
        return real(model, tok, prompts, **more)

    monkeypatch.setattr(gen, "generate", spy)
    again = sample(model, tok, PROBLEMS[:3], "cot", **kw)
    assert calls == [2] and (again.stats["generated"], again.stats["reused"]) == (2, 1)
    assert texts(again) == texts(full)  # the seeded samples do not depend on where the run resumed
    assert not (tmp_path / PARTIAL).exists()
    # everything there: nothing generated; other settings: all again
    assert sample(model, tok, PROBLEMS[:3], "cot", **kw).stats["generated"] == 0 and calls == [2]
    assert sample(model, tok, PROBLEMS[:3], "cot", **{**kw, "top_p": 0.9}).stats["generated"] == 3
    rows = [json.loads(line) for line in (tmp_path / SAMPLES).read_text().splitlines()]
    assert [r["id"] for r in rows] == ["p1", "p2", "p3"] and all(len(r["outputs"]) == 2 for r in rows)


# ------------------------------------------------------------------- no model needed below

PLAIN = types.SimpleNamespace(chat_template=None)  # a tokenizer without a chat template: plain prompts


@pytest.fixture
def fake_vllm(monkeypatch):
    """A `vllm` module that records what it is called with and answers with canned programs."""
    calls = types.SimpleNamespace(llms=[], generate=[])

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class LoRARequest:
        def __init__(self, lora_name, lora_int_id, lora_path):
            self.lora_name, self.lora_int_id, self.lora_path = lora_name, lora_int_id, lora_path

    class LLM:
        def __init__(self, **kw):
            self.kw = kw
            calls.llms.append(kw)

        def generate(self, prompts, sampling_params, lora_request=None, use_tqdm=True):
            calls.generate.append({"prompts": prompts, "params": [p.kw for p in sampling_params], "lora": lora_request})
            outs = []
            for prompt, p in zip(prompts, sampling_params):
                n = p.kw["n"]
                done = [types.SimpleNamespace(text=f" {j + 1} * 1000", token_ids=[0] * (j + 3)) for j in range(n)]
                outs.append(types.SimpleNamespace(prompt=prompt, outputs=done))
            return outs

    vllm = types.ModuleType("vllm")
    vllm.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    vllm.LLM, vllm.SamplingParams = LLM, SamplingParams
    lora, request = types.ModuleType("vllm.lora"), types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    for name, mod in {"vllm": vllm, "vllm.lora": lora, "vllm.lora.request": request}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    from mathdistill.student import vllm_engine

    vllm_engine._llm.cache_clear()
    yield calls
    vllm_engine._llm.cache_clear()


def adapter_folder(tmp_path, r=32):
    folder = tmp_path / "my-adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": "x", "r": r}))
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 8)
    return folder


def test_vllm_engine_gets_lora_requests_and_seeded_sampling_params(fake_vllm, tmp_path):
    adapter = adapter_folder(tmp_path)
    ps = PROBLEMS[:3]
    kw = dict(k=3, temperature=0.7, top_p=0.95, seed=11, max_new_tokens=64, batch_size=2, stop=["\n\n"],
              prefill="ans =", engine="vllm", adapter=str(adapter), weights="w", progress=False)
    res = sample("owner/model", PLAIN, ps, "pot", out_dir=tmp_path / "out", **kw)
    assert fake_vllm.llms == [{"model": "owner/model", "enable_lora": True, "max_lora_rank": 32}]
    assert [len(c["prompts"]) for c in fake_vllm.generate] == [2, 1]  # chunks of batch_size prompts
    first = fake_vllm.generate[0]
    assert first["prompts"][0] == build_prompts(PLAIN, "pot", [ps[0].question])[0] + "ans ="
    assert first["params"][0] == {"n": 3, "temperature": 0.7, "top_p": 0.95, "seed": derive_seed(11, "p1") % 2**63,
                                  "max_tokens": 64, "stop": ["\n\n"]}
    assert first["params"][1]["seed"] == derive_seed(11, "p2") % 2**63
    lora = first["lora"]
    assert lora.lora_path == str(adapter.resolve()) and lora.lora_name == "my-adapter" and lora.lora_int_id >= 1
    # the canned programs "ans = j * 1000" are run in the sandbox: 1000, 2000, 3000
    assert res.rows[0]["outputs"] == ["ans = 1 * 1000", "ans = 2 * 1000", "ans = 3 * 1000"]
    assert res.rows[0]["predictions"] == ["1000", "2000", "3000"] and res.rows[0]["num_tokens"] == [3, 4, 5]
    assert res.stats["engine"] == "vllm" and res.stats["generated"] == 3
    # resumed from the folder: vLLM is not called again; the base model (no adapter) is another key
    assert sample("owner/model", PLAIN, ps, "pot", out_dir=tmp_path / "out", **kw).stats["generated"] == 0
    assert len(fake_vllm.generate) == 2
    greedy = sample("owner/model", PLAIN, ps[:1], "pot", **{**kw, "temperature": 0.0, "adapter": None})
    last = fake_vllm.generate[-1]
    assert last["lora"] is None and last["params"][0]["n"] == 1 and last["params"][0]["seed"] is None
    assert greedy.rows[0]["outputs"] == ["ans = 1 * 1000"] * 3  # one greedy completion, repeated


def test_auto_picks_vllm_only_when_installed_on_cuda_for_a_model_name(fake_vllm, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_engine("auto", "owner/model") == "hf"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_engine("auto", "owner/model") == "vllm"
    assert pick_engine("auto", torch.nn.Linear(1, 1)) == "hf"  # a loaded transformers model stays on hf
    assert pick_engine("auto", "owner/model", loop_stop=True) == "hf"
    with pytest.raises(InputError, match="not a loaded transformers model"):
        pick_engine("vllm", torch.nn.Linear(1, 1))


def test_vllm_engine_refused_when_not_installed(monkeypatch):
    monkeypatch.setattr("mathdistill.student.vllm_engine.installed", lambda: False)
    with pytest.raises(InputError, match="vLLM is not installed"):
        sample("owner/model", PLAIN, PROBLEMS, "cot", engine="vllm")
    assert pick_engine("auto", "owner/model") == "hf"


@pytest.mark.parametrize("kw,message", [
    ({"k": 0}, r"k must be an integer >= 1 \(got 0\)"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
    ({"prefill": ["[PoT]\n"]}, r"prefill must be a string or one string per problem \(4\)"),
    ({"prompts": ["a"]}, "1 prompts for 4 problems"),
    ({"engine": "tgi"}, "engine must be one of auto, hf, vllm"),
    ({"thought": "knowledge"}, "gives no answer to score"),
])
def test_bad_input_is_refused_before_anything_runs(tmp_path, kw, message):
    args = {"thought": "cot", **kw}
    with pytest.raises(InputError, match=message):
        sample(None, PLAIN, PROBLEMS, args.pop("thought"), out_dir=tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_sample_handed_to_the_next_batch_keeps_its_text(student, monkeypatch, finishes):
    """Rows still running when a few rows of their batch are done continue in the next batch from
    their kept keys/values: the samples are those of one-row batches."""
    from mathdistill.student import batches

    model, tok = student
    monkeypatch.setenv("MATHDISTILL_SLOTS", "0")  # generate's batches hand rows on; the slot engine never does
    kw = dict(k=3, temperature=1.0, top_p=0.95, seed=2, max_new_tokens=24, stop=["."], progress=False)
    alone = sample(model, tok, PROBLEMS[:3], "cot", batch_size=1, **kw)
    finishes.clear()
    monkeypatch.setattr(batches, "REFILL_MIN_STEPS", 2)
    handed = sample(model, tok, PROBLEMS[:3], "cot", batch_size=4, **kw)
    assert any(f.preempted for f in finishes)
    assert texts(handed) == texts(alone)


@pytest.mark.parametrize("top_p", [0.9, 1.0])
def test_a_row_draws_from_its_renormalised_top_p_distribution(top_p, monkeypatch):
    """n rows with the same logits and stratified draws ((j + 0.5) / n for row j) through the row
    sampler: each token of the nucleus (HF's TopPLogitsWarper decides which) is picked as often
    as its renormalised probability says, to +-1 in n. Logits: peaked, medium, flat (a nucleus
    wider than the top-1024 shortcut: the full sort)."""
    import torch
    from transformers import TopPLogitsWarper

    from mathdistill.student import batch_hooks

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 3000, generator=g) * torch.tensor([[8.0], [1.0], [0.1]])
    kept = TopPLogitsWarper(top_p)(None, logits.clone()) > float("-inf")
    assert kept[2].sum() > 1024 and (kept[0].sum() < 64 or top_p == 1.0)
    n = 4000
    monkeypatch.setattr(batch_hooks, "uniform", lambda seed, step: (seed + 0.5) / n)  # row j's "seed" is j
    for r in range(3):
        sampler = batch_hooks.RowSampler(list(range(n)), [0] * n, 0, 1.0, top_p, [None] * n)
        out = sampler(torch.zeros(n, 0, dtype=torch.long), logits[r].expand(n, -1).clone())
        assert ((out == 0).sum(-1) == 1).all() and ((out == float("-inf")).sum(-1) == 2999).all()
        picks = out.argmax(-1)
        assert kept[r][picks].all()
        want = torch.where(kept[r], logits[r].softmax(-1), 0.0)
        assert (torch.bincount(picks, minlength=3000) - want / want.sum() * n).abs().max() <= 1.01


def test_row_draws_are_uniform_and_depend_on_seed_and_position_only():
    from mathdistill.student.draws import derive_seed, uniform

    seed = derive_seed(0, "p1", 0)
    draws = [uniform(seed, t) for t in range(20000)]
    assert all(0 <= u < 1 for u in draws) and abs(sum(draws) / len(draws) - 0.5) < 0.01
    assert sum(u < 0.1 for u in draws) / len(draws) == pytest.approx(0.1, abs=0.01)
    assert uniform(seed, 7) == draws[7] and uniform(derive_seed(0, "p1", 1), 7) != draws[7]
    assert derive_seed(0, "p1") == derive_seed(0, "p1") != derive_seed(1, "p1")
