"""LoRID's three adapters at inference: one base in memory, the adapter switched per call (no merged
copies), each role's output the same as that adapter loaded alone with plain PEFT. A one-layer random
llama with random LoRA adapters (tests/student helpers), so it runs in seconds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "student"))
from test_multi_adapter import make_adapter, plain  # noqa: E402
from test_train_identity import tiny_model  # noqa: E402

from mathdistill.data import Problem  # noqa: E402

PROBLEMS = [Problem("a", "What is 3 plus 4?", "7", "synthetic"), Problem("b", "Tom has 5 apples and eats 2. How many are left?", "3", "synthetic")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, student_path):
    root = tmp_path_factory.mktemp("lorid")
    base = tiny_model(root / "base", student_path, 0, hidden=32)
    return base, {role: make_adapter(base, root / role, seed, 4) for seed, role in enumerate(("ir", "kg", "dr"), 1)}


def test_three_adapters_share_one_base_and_switch_per_call(setup, tmp_path):
    import torch

    from mathdistill.eval import weights_identity
    from mathdistill.methods.lorid import KNOWLEDGE, Roles
    from mathdistill.methods.registry import load_config
    from mathdistill.student.adapters import load_with_adapters
    from mathdistill.student.chat import render_prompt
    from mathdistill.student.generate import generate

    base, folders = setup
    model, tok = load_with_adapters(base, folders)  # what lorid.evaluate loads
    assert set(model.peft_config) == {"ir", "kg", "dr"}
    # one copy of the base weights: each LoRA layer holds one base weight and the three adapters beside it
    alone, _ = plain(base)
    base_params = sum(p.numel() for p in alone.parameters())
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert {n.split(".lora_")[1].split(".")[1] for n in lora} == {"ir", "kg", "dr"}
    assert sum(p.numel() for p in model.parameters()) == base_params + sum(p.numel() for p in lora.values())
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    weight = layer.base_layer.weight
    ptr = weight.data_ptr()

    cfg = load_config(Path(__file__).resolve().parents[2] / "recipes" / "lorid.yaml",
                      ["eval.max_new_tokens=10", "eval.batch_size=2", "loop.knowledge_max_new_tokens=10"])
    weights = {r: weights_identity(base, f) for r, f in folders.items()}
    roles = Roles(model, tok, cfg, weights, tmp_path / "sample", progress=False)
    calls = []
    for role in ("ir", "kg", "dr", "ir"):  # the order of a loop iteration, then IR again
        knowledge = ["Knowledge:\n- Add the numbers."] * 2 if role == "dr" else None
        rows = roles.sample(role, PROBLEMS, 0, knowledge)
        calls.append((role, [r["outputs"][0] for r in rows]))
        assert layer.base_layer.weight is weight and weight.data_ptr() == ptr  # never merged, never copied
        assert model.active_adapter == "ir"  # the call restored the active adapter

    def by_itself(role, knowledge=None):
        m, t = plain(base, folders[role])
        prompts = [KNOWLEDGE.student_prompt(p.question) if role == "kg" else
                   KNOWLEDGE.reasoning_prompt(p.question, knowledge[0], "cot") if role == "dr" else
                   f"{p.question}\n[CoT] Think step by step, then finish with \"The answer is <number>\"." for p in PROBLEMS]
        gens = generate(m, t, [render_prompt(t, x) for x in prompts], max_new_tokens=10, progress=False, loop_stop=True)
        return [g.text for g in gens]

    want = {r: by_itself(r, ["Knowledge:\n- Add the numbers."] if r == "dr" else None) for r in ("ir", "kg", "dr")}
    for role, outputs in calls:
        assert outputs == want[role], role
    assert want["ir"] != want["kg"] != want["dr"] != want["ir"]  # the adapters really differ
    with torch.inference_mode():
        assert torch.equal(model.get_base_model().lm_head.weight, alone.lm_head.weight)


@pytest.mark.parametrize("preset", ["paper", "greedy-first"])
def test_the_first_iteration_is_sampled_under_the_paper_preset_and_greedy_under_greedy_first(setup, tmp_path, preset):
    """paper (the LoRID code): iteration 1 sampled at T 1.5 into its own folder; greedy-first: iteration 1 is
    the greedy rows (lorid:ir) themselves, read back, not generated again."""
    import json

    from mathdistill.eval import weights_identity
    from mathdistill.methods.lorid import Roles
    from mathdistill.methods.registry import load_config
    from mathdistill.student.adapters import load_with_adapters

    base, folders = setup
    model, tok = load_with_adapters(base, folders)
    cfg = load_config(Path(__file__).resolve().parents[2] / "recipes" / "lorid.yaml",
                      ["eval.max_new_tokens=10", "eval.batch_size=2", f"loop.preset={preset}"])
    roles = Roles(model, tok, cfg, {r: weights_identity(base, f) for r, f in folders.items()}, tmp_path, progress=False)
    greedy = roles.sample("ir", PROBLEMS, 0)
    first = roles.sample("ir", PROBLEMS, 1)
    folder = "greedy" if preset == "greedy-first" else "iteration-1"
    stats = json.loads((tmp_path / folder / "ir" / "samples.json").read_text())
    if preset == "greedy-first":
        assert not (tmp_path / "iteration-1").exists() and first == greedy and stats["reused"] == len(PROBLEMS)
    else:
        assert (stats["temperature"], stats["top_p"]) == (1.5, 0.9) and stats["generated"] == len(PROBLEMS)
        assert [r["outputs"] for r in first] != [r["outputs"] for r in greedy]
