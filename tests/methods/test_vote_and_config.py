import pytest

from mathdistill.answers import vote
from mathdistill.io import InputError
from mathdistill.methods.registry import load_config

PREF = ["pot", "eot", "cot"]


def test_majority_wins_over_preference():
    assert vote({"cot": ["7"], "eot": ["7.0"], "pot": ["8"]}, PREF) == ("7", "eot")


def test_tie_goes_to_preferred_format():
    assert vote({"cot": ["7"], "pot": ["8"]}, PREF) == ("8", "pot")
    assert vote({"cot": ["7"], "eot": ["9"]}, ["cot", "eot"]) == ("7", "cot")


def test_failures_do_not_vote():
    assert vote({"pot": [None], "eot": [None], "cot": ["3"]}, PREF) == ("3", "cot")
    assert vote({"pot": [None], "cot": []}, PREF) == (None, None)


def test_samples_count_individually():
    # self-consistency: three cot samples saying 5 outvote one pot saying 6
    assert vote({"cot": ["5", "5", "4"], "pot": ["6"]}, PREF) == ("5", "cot")


def test_equivalent_answers_merge():
    assert vote({"cot": ["1,000"], "eot": ["1000"], "pot": ["999"]}, PREF)[0] in ("1,000", "1000")


def test_config_unknown_key_is_named(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\ntrain:\n  lr: 1e-4\n  lora_rank: 8\n")
    with pytest.raises(InputError, match=r"r.yaml: key 'train.lora_rank': unknown key"):
        load_config(recipe)


def test_config_overrides_and_types(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\nthoughts: [cot]\n")
    cfg = load_config(recipe, ["train.max_steps=3", "data.train.limit=16", "thoughts=[cot, pot]"])
    assert cfg.train.max_steps == 3 and cfg.data.train.limit == 16 and cfg.thoughts == ["cot", "pot"]
    with pytest.raises(InputError, match=r"key 'train.max_steps'"):
        load_config(recipe, ["train.max_steps=many"])
    with pytest.raises(InputError, match="not key=value"):
        load_config(recipe, ["train.max_steps"])


def test_config_bad_yaml_names_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\ntrain: [unclosed\n")
    with pytest.raises(InputError, match=r"r.yaml:\d+: invalid YAML"):
        load_config(recipe)


def test_recipes_lists_every_method_with_its_keys(capsys, monkeypatch):
    import json
    import sys

    from mathdistill import cli

    monkeypatch.setattr(sys, "argv", ["mathdistill", "recipes", "--json"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 0
    listing = json.loads(capsys.readouterr().out)
    assert {"base", "cot", "eotd", "etd"} <= set(listing)
    keys = {m: {k["key"]: k["default"] for k in v["keys"]} for m, v in listing.items()}
    assert keys["cot"]["thoughts"] == '["cot"]' and keys["etd"]["thoughts"] == '["cot", "pot", "eot"]'
    assert keys["eotd"]["thoughts"] == '["eot"]' and keys["etd"]["eval.vote"] == "true"
    assert "train.lr" in keys["cot"] and "teach.samples" in keys["cot"]
    assert "train.lr" not in keys["base"] and "eval.max_new_tokens" in keys["base"]  # base trains nothing


def test_method_configs_inherit_the_shared_one():
    from mathdistill.methods.config import DistillConfig, RecipeConfig
    from mathdistill.methods.registry import METHODS

    assert all(issubclass(m.config, RecipeConfig) for m in METHODS.values())
    assert all(issubclass(METHODS[m].config, DistillConfig) for m in ("cot", "eotd", "pot", "etd"))
    from mathdistill.methods.config import EvalConfig

    etd = METHODS["etd"].config
    assert set(etd.model_fields) == set(DistillConfig.model_fields)  # no new top-level keys
    etd_eval = etd.model_fields["eval"].annotation
    assert issubclass(etd_eval, EvalConfig) and set(etd_eval.model_fields) - set(EvalConfig.model_fields) == {
        "vote", "preference"}


def test_eval_config_hands_its_generation_settings_with_overrides():
    """One way from a recipe's `eval:` to a generation call: the config's settings, an override that is not None
    replacing its own (a method's temperature, a role's token limit), and no setting the config does not hold."""
    from mathdistill.eval.config import EvalConfig

    e = EvalConfig(max_new_tokens=100, batch_size=8, loop_stop=False)
    assert e.generation() == {"max_new_tokens": 100, "batch_size": 8, "temperature": 0.0, "top_p": 1.0,
                              "loop_stop": False}
    assert e.generation(temperature=0.7, top_p=0.95, max_new_tokens=None, loop_stop=True) == {
        "max_new_tokens": 100, "batch_size": 8, "temperature": 0.7, "top_p": 0.95, "loop_stop": True}
    assert e.generation(temperature=0.0)["temperature"] == 0.0  # a given 0 is a value, not "the config's"
    with pytest.raises(TypeError, match="samples"):
        e.generation(samples=4)


def test_calculator_in_a_recipe_reaches_evaluation_and_names_rows_plus_calc(tmp_path, data_dir, monkeypatch):
    """`eval.calculator: true` is passed to every evaluation and names every row `<row>+calc` (contract 9)."""
    from types import SimpleNamespace
    from pathlib import Path

    import mathdistill.eval as ev
    import mathdistill.eval.vote as ev_vote
    import mathdistill.student.adapters as adapters
    from mathdistill.methods import steps
    from mathdistill.methods.run import Run

    seen = []

    def fake_eval(model, tok, ps, thought, **kw):
        seen.append((thought, kw["calculator"]))
        rows = [{"id": i, "prediction": str(i * (2 if kw["calculator"] else 1))} for i in range(len(ps))]  # 1 of 2 differs
        return SimpleNamespace(rows=rows, metrics={"dataset": "gsm8k", "n": len(ps), "correct": 1, "accuracy": 0.5,
                                                   "ci95": [0.1, 0.9], "interventions_per_answer": 1.5})

    monkeypatch.setattr(adapters, "load_merged", lambda model, adapter: (None, None))
    monkeypatch.setattr(adapters, "weights_identity", lambda model, adapter: "w")
    monkeypatch.setattr(ev, "evaluate", fake_eval)
    monkeypatch.setattr(ev_vote, "vote_formats", lambda per_format, pref, out_dir: fake_eval(None, None, [1, 2], "vote",
                                                                                              calculator=True))
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "etd.yaml"
    for calc in (True, False):
        seen.clear()
        cfg = load_config(recipe, [f"eval.calculator={str(calc).lower()}", f"data.data_dir={data_dir}",
                                   "data.eval=[{dataset: gsm8k, split: test, limit: 2}]"])
        run = Run.open(tmp_path / f"r{calc}", cfg.model_dump(mode="json"))
        rows = steps.evaluate(run, cfg, "etd", None, ["cot", "pot"], vote=True, preference=["pot", "cot"])
        suffix = "+calc" if calc else ""
        assert [r["method"] for r in rows] == [f"etd:cot{suffix}", f"etd:pot{suffix}", f"etd{suffix}"]
        assert seen[:2] == [("cot", calc), ("pot", calc)]
        assert rows[0]["interventions_per_answer"] == 1.5
    seen.clear()  # `both`: the same weights without, then with the calculator (rows etd:cot ... etd+calc)
    cfg = load_config(recipe, ["eval.calculator=both", f"data.data_dir={data_dir}",
                               "data.eval=[{dataset: gsm8k, split: test, limit: 2}]"])
    rows = steps.evaluate(Run.open(tmp_path / "both", cfg.model_dump(mode="json")), cfg, "etd", None, ["cot", "pot"],
                          vote=True, preference=["pot", "cot"])
    assert [r["method"] for r in rows] == ["etd:cot", "etd:pot", "etd", "etd:cot+calc", "etd:pot+calc", "etd+calc"]
    assert seen == [("cot", False), ("pot", False), ("vote", True), ("cot", True), ("pot", True), ("vote", True)]
    assert [r.get("answers_changed_share") for r in rows] == [None, None, None, 0.5, 0.5, 0.0]  # vote: both fakes calc
    with pytest.raises(InputError, match="calculator"):
        load_config(recipe, ["eval.calculator=sometimes"])


def test_a_whole_config_check_names_its_keys_without_an_empty_key():
    """A check over several keys (a model validator) reads "FILE: message", not "key '': Value error, ..."."""
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "kpdd.yaml"
    with pytest.raises(InputError) as info:
        load_config(recipe, ["plans=null"])
    text = str(info.value)
    assert text.startswith(f"{recipe}: plans is null") and "key ''" not in text and "Value error" not in text


def test_a_row_of_a_reused_evaluation_keeps_its_measured_timing():
    """A result row's eval seconds / tokens per second: the evaluation's own, or, when it reused every
    prediction, the timing of the call that generated them (`measured`); a vote adds up its formats'."""
    from types import SimpleNamespace

    from mathdistill.eval.vote import vote_formats
    from mathdistill.methods.steps import result_row

    base = {"dataset": "gsm8k", "n": 2, "correct": 1, "accuracy": 0.5, "ci95": [0.1, 0.9]}
    fresh = base | {"generated": 2, "seconds": 4.0, "tokens_per_second": 25.0}
    reused = base | {"generated": 0, "seconds": 0, "tokens_per_second": None,
                     "measured": {"n": 2, "seconds": 4.0, "generated_tokens": 100, "tokens_per_second": 25.0}}
    for m in (fresh, reused):
        row = result_row("cot", "cot", m, None)
        assert (row["eval_seconds"], row["gen_tokens_per_s"]) == (4.0, 25.0)
    rows = [{"id": str(i), "question": "q", "gold": "1", "output": "1", "prediction": "1"} for i in range(2)]
    per_format = {"cot": SimpleNamespace(rows=rows, metrics=fresh), "pot": SimpleNamespace(rows=rows, metrics=reused)}
    assert vote_formats(per_format, ["cot", "pot"]).metrics["seconds"] == 8.0
