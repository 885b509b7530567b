"""The slot engine (`student.engine`): greedy output equal to Hugging Face `generate`, seeded samples
independent of the batch, exact nucleus sampling, a decode step that compiles as one graph, and the
same text as `generate`'s batches for stop strings, the loop stop, the calculator, shared prefixes and
adapters. Fast tests use a tiny random Llama with the student's tokenizer; `slow` ones the student."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


@pytest.fixture(scope="module")
def tiny(student_path):
    """(model, tokenizer): a 2-layer random Llama (GQA) over the student's vocabulary."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(student_path)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         attn_implementation="sdpa")
    return LlamaForCausalLM(config).eval(), tok


def run(model, tok, rows, slots, **kw):
    """{row key: generated ids} of `rows` through an Engine of `slots` slots."""
    from mathdistill.student.engine import Engine

    kw = {"capacity": 128, "max_new_tokens": 40, "eos": [tok.eos_token_id], **kw}
    engine = Engine(model, tok, slots=slots, **kw)
    engine.submit(rows)
    got = {}
    engine.run(lambda row, ids, looped, n: got.__setitem__(row.key, ids))
    return got


def prompts(tok, n):
    return [tok.encode(f"Question {i}: what is {i} plus {2 * i + 1}? " * (1 + i % 3)) for i in range(n)]


def test_uniform_is_generate_uniform_bit_for_bit():
    import torch

    from mathdistill.student.engine_pick import as_int64, uniform
    from mathdistill.student.draws import derive_seed, uniform as host_uniform

    seeds = [derive_seed(7, i) for i in range(500)] + [0, 2**63, 2**64 - 1]
    steps = [random.Random(s).randrange(4096) for s in seeds]
    got = uniform(torch.tensor([as_int64(s) for s in seeds]), torch.tensor(steps))
    assert got.tolist() == [host_uniform(s, t) for s, t in zip(seeds, steps)]


def test_tiny_greedy_equals_hf_generate_with_refills(tiny):
    import torch

    from mathdistill.student.engine import Row

    model, tok = tiny
    ids = prompts(tok, 7)
    got = run(model, tok, [Row(key=i, ids=p, budget=12 + i) for i, p in enumerate(ids)], slots=3)
    for i, p in enumerate(ids):
        with torch.inference_mode():
            ref = model.generate(torch.tensor([p]), max_new_tokens=12 + i, do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)[0, len(p):].tolist()
        assert got[i] == ref, i


def test_seeded_samples_do_not_depend_on_the_batch(tiny):
    from mathdistill.student.engine import Row

    model, tok = tiny
    ids = prompts(tok, 6)

    def rows(keys):
        return [Row(key=k, ids=ids[k], budget=30, temperature=0.9, top_p=0.8 if k % 2 else 1.0, seed=1000 + k)
                for k in keys]

    alone = {k: run(model, tok, rows([k]), slots=1, sampling=True)[k] for k in (1, 2)}
    mixed = run(model, tok, rows([5, 1, 3, 0, 2, 4]), slots=4, sampling=True)
    reordered = run(model, tok, rows([2, 4, 1]), slots=2, sampling=True)
    assert mixed[1] == reordered[1] == alone[1] and mixed[2] == reordered[2] == alone[2]
    assert len({tuple(v) for v in mixed.values()}) == 6  # rows differ


def test_nucleus_draws_follow_the_renormalised_nucleus():
    import torch

    from mathdistill.student.engine_pick import pick

    logits = torch.log(torch.tensor([0.4, 0.25, 0.15, 0.1, 0.06, 0.04]))
    n = 20000
    tokens = pick(logits.expand(n, -1), torch.ones(n), torch.full((n,), 0.75), torch.arange(n) * 7919,
                  torch.zeros(n, dtype=torch.long))
    freq = torch.bincount(tokens, minlength=6).float() / n
    want = torch.tensor([0.4, 0.25, 0.15, 0, 0, 0]) / 0.8  # before 0.15: 0.65 < 0.75 -> kept; 0.1: 0.8 -> not
    assert (freq - want).abs().max() < 0.015, freq
    zeros = torch.zeros(4, dtype=torch.long)
    greedy = pick(logits.expand(4, -1), torch.zeros(4), torch.ones(4), torch.arange(4), zeros)
    assert greedy.tolist() == [0] * 4


def test_decode_step_is_one_graph_and_compiles_to_the_same_tokens(tiny):
    import torch
    import torch._dynamo

    from mathdistill.student.engine import Engine, Row

    model, tok = tiny
    features = dict(sampling=True, loop_stop=True, calculator=True, stop=["\n\n"])

    def rows():
        return [Row(key=i, ids=p, budget=16 + i, temperature=0.8 * (i % 2), top_p=0.9, seed=i, loop_stop=True,
                    calculator=True) for i, p in enumerate(prompts(tok, 5))]

    engine = Engine(model, tok, slots=3, capacity=128, max_new_tokens=40, eos=[tok.eos_token_id], **features)
    engine.submit(rows())
    engine._arange, engine._ones = torch.arange(3), torch.ones(3, dtype=torch.bool)
    with torch.inference_mode(), engine.runner.running():
        engine._refill()
        explained = torch._dynamo.explain(engine._decode)(3, 64)
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons
    eager = run(model, tok, rows(), slots=3, **features)
    compiled = run(model, tok, rows(), slots=3, compile="aot_eager", **features)
    assert compiled == eager


def test_unsupported_models_stay_on_generate_batches(tiny):
    from mathdistill.student.engine_kv import supported
    from mathdistill.student.engine_run import use_slots

    model, _ = tiny
    assert supported(model) is None and use_slots(True, model) and not use_slots(False, model)
    model.config.model_type = "gpt2"
    try:
        assert "gpt2" in supported(model) and not use_slots(True, model)
    finally:
        model.config.model_type = "llama"


# --- the student: the engine against HF generate and against generate's batches ------------------------


@pytest.mark.slow
def test_greedy_identity_with_hf_generate_16_problems(student, data_dir):
    """The issue's CI check: 16 GSM8K test problems x 64 tokens, token-identical to HF generate one at a
    time, at 7 and 64 slots (7: refills while others decode) and 1 slot on four of them; a divergence
    only at a near-tie (top-2 logit gap < 1e-5), listed."""
    from engine_identity import compare, engine_tokens, reference

    from mathdistill import data
    from mathdistill.eval import build_prompts
    from mathdistill.student.chat import prompt_token_ids
    from mathdistill.student.stopping import eos_ids

    model, tok = student
    eos = eos_ids(model, tok)
    problems = data.load("gsm8k", "test", data_dir=data_dir, limit=16)
    ids = [prompt_token_ids(tok, p) for p in build_prompts(tok, "cot", [p.question for p in problems])]
    ref = reference(model, ids, 64, eos)
    for slots, n in ((7, 16), (64, 16), (1, 4)):
        got = compare(ref[:n], engine_tokens(model, tok, ids[:n], 64, slots, eos))
        assert got["all_near_ties"], (slots, got["divergences"])
        if got["divergences"]:
            print(f"slots {slots}: near-tie divergences {got['divergences']}")


SHOTS = "Q: What is 3 * 4?\nA: 3 * 4 = 12.\n\nQ: What is 25 + 17?\nA: 25 + 17 = 42.\n\n"


@pytest.mark.slow
@pytest.mark.parametrize("case", ["stop", "calculator", "loop", "prefix", "sample"])
def test_same_text_as_generate_batches(student, case):
    """stop strings, the calculator, the loop stop, a long shared prefix (stored once) and seeded sampling:
    the engine gives what `generate`'s batches give (sampling: the same seeds, draws may differ only
    where the two computations' probabilities differ, so compared on its greedy-equal settings)."""
    from mathdistill.student.chat import render_prompt
    from mathdistill.student.generate import generate

    model, tok = student
    questions = ["What is 17 * 23?", "What is 1,200 / 16?", "Who wrote Hamlet?", "What is 987 - 123 + 45?"]
    kw = dict(max_new_tokens=40, batch_size=3, progress=False)
    if case == "stop":
        prompts_, kw["stop"] = [render_prompt(tok, q) for q in questions], [".", "\n"]
    elif case == "calculator":
        prompts_, kw["stop"], kw["calculator"] = [f"{SHOTS}Q: {q}\nA:" for q in questions], ["\n\n"], True
    elif case == "loop":
        prompts_ = [render_prompt(tok, "Write the word 'apple' 200 times, separated by spaces."),
                    render_prompt(tok, "What is 2 + 3? Answer in one short sentence.")]
        kw.update(loop_stop=True, max_new_tokens=120)
    elif case == "prefix":
        prompts_ = [SHOTS * 4 + f"Q: {q}\nA:" for q in questions]  # ~170 shared tokens: stored once
    else:
        prompts_ = [render_prompt(tok, q) for q in questions]
        kw.update(temperature=0.7, top_p=1.0, num_samples=2, seed=3)
    slots, batches = (generate(model, tok, prompts_, slots=flag, **kw) for flag in (True, False))
    if case == "sample":  # same draws unless a uniform falls within float noise of a token's edge
        same = sum(a == b for x, y in zip(slots, batches) for a, b in zip(x.texts, y.texts))
        assert same >= 6, (slots, batches)
        return
    assert slots == batches
    if case == "calculator":
        assert sum(g.interventions[0] for g in slots) >= 3
    if case == "loop":
        assert slots[0].looped[0] and not slots[1].looped[0]


@pytest.mark.slow
def test_samples_independent_of_the_other_prompts(student):
    from mathdistill.student.chat import render_prompt
    from mathdistill.student.generate import generate

    model, tok = student
    qs = ["What is 6 * 7?", "Name a prime number.", "What is 10 - 3?", "Count to five."]
    kw = dict(max_new_tokens=24, temperature=0.8, top_p=0.9, num_samples=2, progress=False, slots=True)
    together = generate(model, tok, [render_prompt(tok, q) for q in qs], batch_size=5, seeds=[11, 12, 13, 14], **kw)
    alone = generate(model, tok, [render_prompt(tok, qs[2])], batch_size=1, seeds=[13], **kw)
    assert alone[0] == together[2]


@pytest.mark.slow
def test_adapter_per_call(student_path):
    import torch
    from peft import LoraConfig, get_peft_model

    from mathdistill.student.chat import render_prompt
    from mathdistill.student.generate import BASE, generate
    from mathdistill.models import load_model

    model, tok = load_model(student_path)
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
                          adapter_name="a")
    peft.add_adapter("b", LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.eval()
    prompts_ = [render_prompt(tok, q) for q in ("What is 2 + 3?", "Name a colour.")]
    with torch.no_grad():
        for adapter in ("a", "b", BASE):
            kw = dict(max_new_tokens=10, batch_size=2, adapter=adapter, progress=False)
            assert generate(peft, tok, prompts_, slots=True, **kw) == generate(peft, tok, prompts_, slots=False, **kw)


@pytest.mark.slow
def test_greedy_text_does_not_depend_on_the_rows(student, data_dir):
    """What the CPU's default row count rests on: 40 GSM8K CoT prompts x 32 tokens give the same text (and token
    counts) at 16 and 40 rows on the slot engine (40: every prompt in a slot at once; 16: refills while others
    decode). benchmarks/cpu_rows.py measures the speed of each at full size."""
    from mathdistill import data
    from mathdistill.student.generate import generate
    from mathdistill.student.prompts import build_prompts

    model, tok = student
    problems = data.load("gsm8k", "test", data_dir=data_dir, limit=40)
    prompts = build_prompts(tok, "cot", [p.question for p in problems])
    kw = dict(max_new_tokens=32, loop_stop=True, progress=False, slots=True)
    assert generate(model, tok, prompts, batch_size=16, **kw) == generate(model, tok, prompts, batch_size=40, **kw)
