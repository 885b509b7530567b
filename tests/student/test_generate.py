"""Batched generation on the real default student: same text as one-at-a-time HF generation,
input order kept, stop strings, sampling, and per-call adapter choice."""

from __future__ import annotations

import pytest

from mathdistill.io import InputError
from mathdistill.student.chat import render_few_shot, render_prompt
from mathdistill.student.generate import BASE, generate
from mathdistill.student.generation import progress

QUESTIONS = [
    "What is 2 + 3?",
    "A farmer has 17 sheep and buys 5 more, then sells 8 of them at the market on Sunday. How many sheep does he have left?",
    "Tom has 4 apples.",
    "If a train travels 60 miles per hour for 3 hours, how far does it go?",
    "Sara reads 12 pages a day. How many pages does she read in a week?",
]


def test_progress_bar_goes_to_stderr(capsys):
    with progress(2, True) as bar:
        task = bar.add_task("generate", total=2, speed="")
        bar.advance(task, 2)
    out, err = capsys.readouterr()
    assert out == "" and "generate" in err and "2/2" in err


@pytest.mark.parametrize("setting,value,message", [
    ("batch_size", 0, r"batch_size must be an integer >= 1 \(got 0\)"),
    ("num_samples", -1, r"num_samples must be an integer >= 1"),
    ("max_new_tokens", 0, r"max_new_tokens must be an integer >= 1"),
    ("temperature", -1.0, r"temperature must be >= 0"),
    ("top_p", 0.0, r"top_p must be in \(0, 1\]"),
])
def test_bad_settings_fail_before_the_model_is_used(setting, value, message):
    with pytest.raises(InputError, match=message):
        generate(None, None, ["a prompt"], **{setting: value})  # no model needed to say so


def one_by_one(model, tok, prompts, max_new_tokens):
    """Reference: plain HF greedy generation, one prompt at a time (no padding, no shared cache)."""
    import torch

    out = []
    with torch.inference_mode():
        for p in prompts:
            enc = tok(p, return_tensors="pt", add_special_tokens=False)
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
            out.append(tok.decode(ids[0, enc.input_ids.shape[1]:], skip_special_tokens=True))
    return out


@pytest.mark.slow
def test_batched_equals_one_by_one_in_input_order(student):
    model, tok = student
    prompts = [render_prompt(tok, q) for q in QUESTIONS]  # lengths deliberately unsorted
    gens = generate(model, tok, prompts, max_new_tokens=8, batch_size=2, progress=False)
    assert [g.text for g in gens] == one_by_one(model, tok, prompts, 8)
    assert all(len(g.texts) == 1 and 1 <= g.num_tokens[0] <= 8 for g in gens)


@pytest.mark.slow
def test_shared_few_shot_prefix_gives_the_same_text(student):
    model, tok = student
    shots = [("What is 1 + 1?", "1 + 1 = 2.\nThe answer is 2."), ("What is 3 * 4?", "3 * 4 = 12.\nThe answer is 12.")]
    prompts = [render_few_shot(tok, shots, q) for q in QUESTIONS[:3]]
    gens = generate(model, tok, prompts, max_new_tokens=10, batch_size=3, progress=False)
    assert [g.text for g in gens] == one_by_one(model, tok, prompts, 10)


@pytest.mark.slow
def test_stop_string_ends_and_is_cut(student):
    model, tok = student
    prompt = render_prompt(tok, QUESTIONS[1])
    full = generate(model, tok, [prompt], max_new_tokens=24, batch_size=1, progress=False)[0]
    words = full.text.split()
    assert len(words) > 4, full.text
    stop = " " + words[3]  # a word in the middle of the greedy output
    cut = generate(model, tok, [prompt], max_new_tokens=24, batch_size=1, stop=[stop], progress=False)[0]
    assert cut.text == full.text[: full.text.find(stop)]
    assert cut.num_tokens[0] < full.num_tokens[0]


@pytest.mark.slow
def test_sampling_several_samples_reproducible_with_seed(student):
    model, tok = student
    prompts = [render_prompt(tok, q) for q in QUESTIONS[:2]]
    a = generate(model, tok, prompts, max_new_tokens=8, batch_size=4, temperature=1.0, num_samples=3, seed=7, progress=False)
    b = generate(model, tok, prompts, max_new_tokens=8, batch_size=4, temperature=1.0, num_samples=3, seed=7, progress=False)
    assert [g.texts for g in a] == [g.texts for g in b]
    assert all(len(g.texts) == 3 and len(g.num_tokens) == 3 for g in a)
    assert len({t for g in a for t in g.texts}) > 2  # samples differ


@pytest.mark.slow
def test_adapter_choice_per_call(student_path):
    import torch
    from peft import LoraConfig, get_peft_model

    from mathdistill.models import load_model

    model, tok = load_model(student_path)  # own copy: PEFT edits the model in place
    prompts = [render_prompt(tok, q) for q in QUESTIONS[:2]]
    base = [g.text for g in generate(model, tok, prompts, max_new_tokens=8, batch_size=2, progress=False)]
    torch.manual_seed(0)
    cfg = dict(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    peft = get_peft_model(model, LoraConfig(**cfg), adapter_name="left")
    peft.add_adapter("right", LoraConfig(**cfg))
    peft.set_adapter("right")
    peft.eval()

    def run(adapter):
        return [g.text for g in generate(peft, tok, prompts, max_new_tokens=8, batch_size=2, adapter=adapter, progress=False)]

    out_a, out_b = run("left"), run("right")
    assert out_a != base and out_b != base and out_a != out_b
    assert run(BASE) == base  # adapters disabled: exactly the base model
    assert peft.active_adapter == "right"  # the call restored the active adapter
    assert run(None) == out_b
    with pytest.raises(InputError, match="not loaded"):
        run("missing")


@pytest.mark.slow
def test_long_runners_continue_in_a_later_batch_with_the_same_text(student, monkeypatch, finishes):
    """A batch whose last row is still running while others wait hands it on (preemption):
    it continues from its tokens so far, and the text is what one-by-one generation gives."""
    from mathdistill.student import batches

    model, tok = student
    monkeypatch.setattr(batches, "PREEMPT_MIN_STEPS", 2)
    prompts = [render_prompt(tok, q) for q in QUESTIONS]
    # batch 1 (8 longest rows): 6 stop at a comma within a few tokens, 2 run on -> handed on
    gens = generate(model, tok, prompts * 3, max_new_tokens=10, batch_size=8, stop=[","], progress=False,
                    slots=False)  # the batches path hands rows on; the slot engine never needs to
    assert any(f.preempted for f in finishes)
    want = [t.split(",")[0] for t in one_by_one(model, tok, prompts, 10)]
    assert [g.text for g in gens] == want * 3
