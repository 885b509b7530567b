"""Several named adapters on one base: train B beside a frozen A, switch per call, reload, merge."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mathdistill.student.train import TrainConfig, train

pytestmark = pytest.mark.slow

PROMPTS = ["What is 3 plus 4?", "What is 10 plus 5?"]


def word_rows(word: str) -> list[dict]:
    """Tiny data with an unmistakable habit: every answer starts with `word`."""
    return [{"prompt": f"What is {a} plus {b}?", "completion": f"{word}! {a} + {b} = {a + b}."}
            for a, b in [(1, 2), (2, 5), (6, 3), (4, 4), (7, 1), (9, 2), (3, 8), (5, 6)]]


# plain Hugging Face + PEFT code, run both in this process and in a fresh one
GREEDY = """
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel

def greedy(model, tok, prompts, n=12):
    outs = []
    for p in prompts:
        text = tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        ids = tok(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=n, do_sample=False)
        outs.append(tok.decode(out[0, ids["input_ids"].shape[1]:]))
    return outs

if __name__ == "__main__":
    base_dir, adapter_dir, prompts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    tok = AutoTokenizer.from_pretrained(base_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir).eval()
    print(json.dumps(greedy(model, tok, prompts)))
"""


@pytest.fixture(scope="module")
def two_adapters(tmp_path_factory, student_path):
    """Adapter 'alpha' trained alone, then 'bravo' trained with 'alpha' loaded beside it (frozen)."""
    from mathdistill.student.train_model import build_model

    root = tmp_path_factory.mktemp("adapters")
    common = dict(model=student_path, max_steps=8, batch_size=4, lr=3e-3, max_seq_len=128, warmup=0, save_steps=100)
    train(TrainConfig(adapter_name="alpha", **common), word_rows("Alpha"), root / "alpha")
    cfg_b = TrainConfig(adapter_name="bravo", frozen_adapters={"alpha": str(root / "alpha")}, keep_checkpoints=True,
                        **{**common, "save_steps": 8})
    model, _ = build_model(cfg_b)
    trainable = [k for k, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".bravo." in k for k in trainable)
    train(cfg_b, word_rows("Bravo"), root / "bravo")
    return root


def test_bravo_trains_beside_frozen_alpha_without_changing_it(two_adapters):
    from safetensors.torch import load_file

    # the final checkpoint of bravo's run holds every adapter of the trained model
    ckpt = two_adapters / "bravo" / "checkpoints" / "checkpoint-8"
    alpha_before = load_file(two_adapters / "alpha" / "adapter_model.safetensors")
    alpha_after = load_file(ckpt / "alpha" / "adapter_model.safetensors")
    assert alpha_before.keys() == alpha_after.keys()
    assert all(torch_equal(alpha_before[k], alpha_after[k]) for k in alpha_before)
    bravo = load_file(two_adapters / "bravo" / "adapter_model.safetensors")
    assert bravo.keys() == alpha_before.keys()  # same layout, other weights
    assert not all(torch_equal(bravo[k], alpha_before[k]) for k in bravo)
    # the adapter folder holds bravo alone, in standard PEFT layout
    cfg = json.loads((two_adapters / "bravo" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 16 and not (two_adapters / "bravo" / "alpha").exists()


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


def test_per_call_adapter_choice_and_untouched_base(two_adapters, student, student_path):
    from mathdistill.student.adapters import load_with_adapters
    from mathdistill.student.chat import render_prompt
    from mathdistill.student.generate import BASE, generate

    model, tok = load_with_adapters(student_path, {"alpha": two_adapters / "alpha", "bravo": two_adapters / "bravo"})
    prompts = [render_prompt(tok, p) for p in PROMPTS]

    def texts(m, adapter):
        return [g.text for g in generate(m, tok, prompts, max_new_tokens=10, adapter=adapter, progress=False)]

    alpha, bravo, base = texts(model, "alpha"), texts(model, "bravo"), texts(model, BASE)
    assert all(t.startswith("Alpha!") for t in alpha), alpha
    assert all(t.startswith("Bravo!") for t in bravo), bravo
    assert base == texts(student[0], None)  # base-only through the adapters == the plain student
    assert not any(t.startswith(("Alpha", "Bravo")) for t in base)


def test_saved_adapter_gives_identical_generations_in_a_fresh_process(two_adapters, student_path, tmp_path):
    from mathdistill.student.adapters import load_with_adapters

    namespace = {}
    exec(GREEDY, namespace)
    model, tok = load_with_adapters(student_path, {"bravo": two_adapters / "bravo"})
    here = namespace["greedy"](model, tok, PROMPTS)
    script = tmp_path / "greedy.py"
    script.write_text(GREEDY)
    proc = subprocess.run([sys.executable, str(script), student_path, str(two_adapters / "bravo"), json.dumps(PROMPTS)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == here
    assert all(t.startswith("Bravo!") for t in here)


def test_merge_gives_a_standalone_model_with_the_same_generations(two_adapters, student_path, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mathdistill.student.adapters import load_with_adapters, merge

    namespace = {}
    exec(GREEDY, namespace)
    out = merge(student_path, two_adapters / "alpha", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    peft_model, _ = load_with_adapters(student_path, {"alpha": two_adapters / "alpha"})
    assert namespace["greedy"](merged, tok, PROMPTS) == namespace["greedy"](peft_model, tok, PROMPTS)
    assert not (out / "adapter_config.json").exists()
