"""Several adapters on one base, chosen per call (issue 12, point 5).

A one-layer random llama with the student's tokenizer and LoRA adapters built with PEFT whose weights
are random (`init_lora_weights=False`, fixed seeds), so each adapter clearly changes the output and the
whole file runs in seconds. The references are loaded with plain transformers + PEFT, not our code.
"""

from __future__ import annotations

import json
import shutil

import pytest
from test_train_identity import tiny_model

from mathdistill.io import InputError

PROMPTS = ["What is 3 plus 4?", "Tom has 5 apples and eats 2. How many are left?", "What is 10 times 12?"]
NEW_TOKENS = 12


def make_adapter(base_dir, out, seed: int, r: int):
    """A LoRA adapter on every linear layer of `base_dir` with random A and B (seeded): not the identity."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir)
    torch.manual_seed(seed)
    lora = LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(base, lora).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory, student_path):
    """The base folder and adapters alpha (r 8) and bravo (r 4, other seed) on it."""
    root = tmp_path_factory.mktemp("multi")
    base = tiny_model(root / "base", student_path, 0, hidden=32)
    return base, make_adapter(base, root / "alpha", 1, 8), make_adapter(base, root / "bravo", 2, 4)


def plain(base_dir, adapter_dir=None, merged=False):
    """(model, tokenizer) loaded with transformers + PEFT only: the base, or the base with one adapter."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(adapter_dir)).eval()
        model = model.merge_and_unload() if merged else model
    return model, AutoTokenizer.from_pretrained(base_dir)


def run(model, tok, adapter=None):
    """(texts, token counts) of greedy generation through mathdistill's `generate`."""
    from mathdistill.student.chat import render_prompt
    from mathdistill.student.generate import generate

    gens = generate(model, tok, [render_prompt(tok, p) for p in PROMPTS], max_new_tokens=NEW_TOKENS,
                    adapter=adapter, progress=False)
    return [g.text for g in gens], [g.num_tokens[0] for g in gens]


def logits(model, tok):
    import torch

    from mathdistill.student.chat import render_prompt

    ids = tok(render_prompt(tok, PROMPTS[1]), return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        return model(**ids).logits


def test_a_then_b_then_a_equals_each_adapter_loaded_alone(setup):
    import torch

    from mathdistill.student.adapters import load_with_adapters

    base, alpha, bravo = setup
    model, tok = load_with_adapters(base, {"alpha": alpha, "bravo": bravo})
    assert model.active_adapter == "alpha"  # the first one, until a call asks for another
    # the adapters take turns on one loaded model, as LoRID's IR / KG / DR do
    seen = [(name, run(model, tok, name)) for name in ("alpha", "bravo", "alpha", "base", "bravo", "alpha")]
    assert model.active_adapter == "alpha"  # each call restores the active adapter
    alone = {"alpha": run(*plain(base, alpha)), "bravo": run(*plain(base, bravo)), "base": run(*plain(base))}
    for name, got in seen:
        assert got == alone[name], name
    assert alone["alpha"][0] != alone["bravo"][0] != alone["base"][0] != alone["alpha"][0]
    assert all(n == NEW_TOKENS for n in alone["alpha"][1])  # full-length, so the comparison covers every step

    # bitwise the same logits: an inactive adapter adds nothing to the forward pass
    for name in ("bravo", "alpha"):
        model.set_adapter(name, inference_mode=True)
        assert torch.equal(logits(model, tok), logits(plain(base, setup[1 if name == "alpha" else 2])[0], tok))
    with model.disable_adapter():
        assert torch.equal(logits(model, tok), logits(plain(base)[0], tok))


def test_merged_adapter_gives_the_same_tokens_up_to_rounding(setup):
    """Merging changes the arithmetic (x(W + sBA) instead of xW + s(xA)B): the logits move by float
    rounding only, and here the greedy tokens stay the same."""
    import torch

    from mathdistill.student.adapters import load_with_adapters

    base, alpha, bravo = setup
    model, tok = load_with_adapters(base, {"alpha": alpha, "bravo": bravo})
    for name, folder in (("alpha", alpha), ("bravo", bravo)):
        merged, _ = plain(base, folder, merged=True)
        assert run(model, tok, name) == run(merged, tok)
        model.set_adapter(name, inference_mode=True)
        switched, folded = logits(model, tok), logits(merged, tok)
        assert torch.allclose(switched, folded, rtol=0, atol=1e-5), (switched - folded).abs().max()


def test_loading_leaves_every_adapter_frozen(setup):
    from mathdistill.student.adapters import load_with_adapters

    base, alpha, bravo = setup
    model, _ = load_with_adapters(base, {"alpha": alpha, "bravo": bravo})
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert any(".alpha." in n for n in lora) and any(".bravo." in n for n in lora)
    assert not any(p.requires_grad for p in model.parameters())


def test_an_unknown_adapter_is_named_with_the_loaded_ones(setup):
    from mathdistill.student.adapters import load_with_adapters

    base, alpha, bravo = setup
    model, tok = load_with_adapters(base, {"alpha": alpha, "bravo": bravo})
    with pytest.raises(InputError, match=r"adapter 'gamma' is not loaded on this model; loaded adapters: alpha, bravo"):
        run(model, tok, "gamma")
    assert model.active_adapter == "alpha"
    with pytest.raises(InputError, match=r"adapter name 'base' .*other than 'base'"):
        load_with_adapters(base, {"alpha": alpha, "base": bravo})


def test_adapters_of_different_bases_are_refused_before_loading(setup, tmp_path, student_path):
    """Same shapes, other weights: PEFT would load it and give wrong text without a word."""
    from mathdistill.student.adapters import load_with_adapters

    base, alpha, _ = setup
    other_base = tiny_model(tmp_path / "other", student_path, 1, hidden=32)
    other = make_adapter(other_base, tmp_path / "other-adapter", 3, 8)
    with pytest.raises(InputError, match=r"adapters trained on different base models cannot share one base: "
                                         r"'alpha' \(.*alpha\): .*base; 'kg' \(.*other-adapter\): .*other"):
        load_with_adapters("no-such-model", {"alpha": alpha, "kg": other})  # refused before the base loads


def test_the_training_record_decides_which_base_an_adapter_belongs_to(setup, tmp_path, student_path):
    """Adapters that mathdistill trained are compared by the base weights' sha256 it recorded: the same base
    copied to another folder is the same base; a base folder rewritten with other weights is not."""
    from mathdistill.student.adapters import load_with_adapters
    from mathdistill.student.train import TrainConfig, train

    base = setup[0]
    copy = str(shutil.copytree(base, tmp_path / "copy"))
    rows = [{"prompt": "What is 1 plus 2?", "completion": "3."}]
    common = dict(max_steps=1, batch_size=1, max_seq_len=64, warmup=0, save_steps=100)
    train(TrainConfig(model=base, **common), rows, tmp_path / "a")
    train(TrainConfig(model=copy, **common), rows, tmp_path / "b")
    model, _ = load_with_adapters(base, {"a": tmp_path / "a", "b": tmp_path / "b"})  # other paths, same weights
    assert set(model.peft_config) == {"a", "b"}

    tiny_model(copy, student_path, 1, hidden=32)  # same folder, same shapes, other weights
    train(TrainConfig(model=copy, **common), rows, tmp_path / "c")
    names = [json.loads((tmp_path / x / "adapter_config.json").read_text())["base_model_name_or_path"] for x in "bc"]
    assert names[0] == names[1]  # adapter_config.json cannot tell them apart
    with pytest.raises(InputError, match=r"different base models cannot share one base: 'b' .*: sha256 [0-9a-f]{12}.*; 'c' .*: sha256"):
        load_with_adapters(base, {"b": tmp_path / "b", "c": tmp_path / "c"})
