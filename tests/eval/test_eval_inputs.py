"""`evaluate` and `mathdistill eval` without a model: what gets scored (keypoints on its solution,
knowledge refused), every bad input refused before anything loads or is written, and the resume
key following the weights and the prompts. Generation is replaced by canned outputs here; the
real model runs in test_eval.py."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

from mathdistill.data import Problem
from mathdistill.eval import PARTIAL, evaluate
from mathdistill.io import InputError
from mathdistill.student.generate import Generation

PLAIN = types.SimpleNamespace(chat_template=None)  # a tokenizer without a chat template: plain-text prompts
PROBLEMS = [Problem("p1", "Tom has 3 apples and buys 4. How many now?", "7", "toy"),
            Problem("p2", "Ann has 5 pens and loses 2. How many left?", "3", "toy"),
            Problem("p3", "A box holds 6 eggs. How many eggs in 2 boxes?", "12", "toy")]


@pytest.fixture
def canned(monkeypatch):
    """generate() replaced by canned outputs: {question start: text}; records the prompts of each call."""
    outputs, calls = {}, []

    def generate(model, tokenizer, prompts, *, num_samples=1, on_result=None, **kw):
        calls.append(list(prompts))
        gens = []
        for i, prompt in enumerate(prompts):
            text = next(t for q, t in outputs.items() if q in prompt)
            gens.append(Generation([text] * num_samples, [len(text.split())] * num_samples, [False] * num_samples))
            if on_result is not None:
                on_result(i, gens[-1])
        return gens

    monkeypatch.setattr("mathdistill.student.generate.generate", generate)
    return types.SimpleNamespace(outputs=outputs, calls=calls)


def test_keypoints_is_scored_on_the_answer_of_its_solution(canned):
    points = "Core question: How many?\nKey points:\n- The numbers in the problem.\n"
    canned.outputs.update({
        "Tom": points + "Solution:\n3 + 4 = 7. The answer is 7.",
        "Ann": points,  # no solution part: no answer, so not correct
        "A box": points + "Solution:\n6 + 2 = 8. The answer is 8.",
    })
    res = evaluate(None, PLAIN, PROBLEMS, thought="keypoints", weights="w", progress=False)
    assert [(r["prediction"], r["correct"]) for r in res.rows] == [("7", True), (None, False), ("8", False)]
    assert res.rows[1]["error"] == "no solution part"
    assert res.metrics["correct"] == 1 and res.metrics["no_answer"] == 1
    assert "[KeyPoints]" in canned.calls[0][0]


def test_knowledge_gives_no_answer_and_is_refused(canned, tmp_path):
    canned.outputs["Tom"] = "Knowledge:\n- Buying more adds to what one has."
    for bad, message in [("knowledge", "gives no answer to score"), ("xyz", "unknown --thought 'xyz'")]:
        with pytest.raises(InputError, match=message) as e:
            evaluate(None, PLAIN, PROBLEMS[:1], thought=bad, weights="w", out_dir=tmp_path / "out")
        assert "cot, pot, eot, l2m, keypoints" in str(e.value)
    assert not canned.calls and not (tmp_path / "out").exists()


@pytest.mark.parametrize("setting,value,message", [
    ("batch_size", 0, r"batch_size must be an integer >= 1 \(got 0\)"),
    ("samples", 0, r"samples must be an integer >= 1"),
    ("max_new_tokens", -3, r"max_new_tokens must be an integer >= 1 \(got -3\)"),
    ("max_new_tokens", 2.5, r"max_new_tokens must be an integer >= 1"),
    ("temperature", -0.1, r"temperature must be >= 0"),
    ("top_p", 0.0, r"top_p must be in \(0, 1\]"),
    ("top_p", 1.5, r"top_p must be in \(0, 1\]"),
    ("shots", -1, r"shots must be an integer >= 0"),
])
def test_bad_settings_are_refused_before_anything_is_written(canned, tmp_path, setting, value, message):
    canned.outputs["Tom"] = "The answer is 7."
    with pytest.raises(InputError, match=message):
        evaluate(None, PLAIN, PROBLEMS[:1], weights="w", out_dir=tmp_path / "out", **{setting: value})
    assert not canned.calls and not (tmp_path / "out").exists()  # no empty predictions.partial.jsonl


def test_output_folder_must_not_be_a_file(canned, tmp_path):
    (tmp_path / "f").write_text("x")
    for out in (tmp_path / "f", tmp_path / "f" / "sub"):
        with pytest.raises(InputError, match=r"f is a file; the output must be a folder"):
            evaluate(None, PLAIN, PROBLEMS[:1], weights="w", out_dir=out)


def test_resume_key_follows_the_weights_and_the_prompts(canned, tmp_path):
    canned.outputs.update({"Tom": "The answer is 7.", "Ann": "The answer is 3.", "A box": "The answer is 12."})
    kw = dict(out_dir=tmp_path, progress=False, model_name="same name")

    def run(**more):
        return evaluate(None, PLAIN, PROBLEMS, **{**kw, **more}).metrics

    assert run(weights={"adapter_sha256": "aaa"})["generated"] == 3
    assert run(weights={"adapter_sha256": "aaa"})["generated"] == 0  # same weights: loaded
    assert run(weights={"adapter_sha256": "bbb"})["generated"] == 3  # other weights, same name: redone
    # other prompts (a chat template now), same weights: redone
    chat = types.SimpleNamespace(chat_template="x", apply_chat_template=lambda m, **k: f"<user>{m[-1]['content']}<bot>")
    assert evaluate(None, chat, PROBLEMS, weights={"adapter_sha256": "bbb"}, **kw).metrics["generated"] == 3
    assert canned.calls[-1][0].startswith("<user>")
    # more problems than last time: the finished ones are kept
    extra = Problem("p4", "Sam has 1 cat and gets 1 more. How many cats?", "2", "toy")
    canned.outputs["Sam"] = "The answer is 2."
    m = evaluate(None, chat, [*PROBLEMS, extra], weights={"adapter_sha256": "bbb"}, **kw).metrics
    assert (m["generated"], m["reused"], m["correct"]) == (1, 3, 4)
    assert m["weights"] == {"adapter_sha256": "bbb"} and m["model"] == "same name"
    assert not (tmp_path / PARTIAL).exists()


# ---------------------------------------------------------------------------- the command line

@pytest.fixture
def broken_model(tmp_path):
    """A model folder that fails as soon as anything tries to load it."""
    folder = tmp_path / "broken-model"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    return folder


def eval_in_process(argv, capsys, monkeypatch):
    from mathdistill.cli import main

    monkeypatch.setattr(sys, "argv", ["mathdistill", "eval", *argv])
    with pytest.raises(SystemExit) as e:
        main()
    out, err = capsys.readouterr()
    return e.value.code, out, err


def data_root(tmp_path):
    """svamp as it should be; addsub with a word for a gold answer; singleop empty; multiarith missing."""
    root = tmp_path / "data"
    (root / "mawps").mkdir(parents=True)
    (root / "svamp").mkdir()
    (root / "svamp" / "SVAMP.json").write_text(json.dumps([{"ID": "s1", "Body": "Tom has 3 apples.",
                                                             "Question": "He eats 1. How many are left?", "Answer": 2.0}]))
    good = json.dumps({"input": "Tom has 2 apples and gets 3 more. How many?", "target": 5})
    (root / "mawps" / "addsub.jsonl").write_text(good + "\n" + json.dumps({"input": "q?", "target": "lots"}) + "\n")
    (root / "mawps" / "singleop.jsonl").write_text("")
    return root


def adapter_folder(tmp_path, config=None, weights=True):
    folder = tmp_path / "adapter"
    folder.mkdir()
    if config is not None:
        (folder / "adapter_config.json").write_text(config)
    if weights:
        (folder / "adapter_model.safetensors").write_bytes(b"\0" * 8)
    return folder


BAD = [  # (arguments, text the error must contain)
    (["--thought", "knowledge"], "--thought knowledge: this format gives no answer to score"),
    (["--thought", "xyz"], "unknown --thought 'xyz'"),
    (["--dataset", "nosuch"], "unknown dataset 'nosuch'"),
    (["--split", "train"], "dataset 'svamp' has no split 'train'"),
    (["--shots", "-1"], "'--shots'"),
    (["--shots", "2", "--thought", "l2m"], "--shots needs reference rationales"),
    (["--limit", "0"], "'--limit'"),
    (["--limit", "-5"], "'--limit'"),
    (["--batch-size", "0"], "'--batch-size'"),
    (["--samples", "0"], "'--samples'"),
    (["--max-new-tokens", "0"], "'--max-new-tokens'"),
    (["--temperature", "-1"], "'--temperature'"),
    (["--top-p", "0"], "'--top-p'"),
    (["--top-p", "1.5"], "'--top-p'"),
    (["--threads", "0"], "'--threads'"),
    (["--seed", "-1"], "'--seed'"),
    (["--limit", "many"], "'--limit'"),
    (["--adapter", "{tmp}/nowhere"], "'--adapter'"),
    (["--adapter", "{adapter:none}"], "has no adapter_config.json"),
    (["--adapter", "{adapter:malformed}"], "adapter_config.json:1: invalid JSON"),
    (["--adapter", "{adapter:list}"], "adapter_config.json: expected a JSON object"),
    (["--adapter", "{adapter:noweights}"], "has no adapter weights"),
    (["--out", "{tmp}/a-file"], "'--out'"),
    (["--out", "{tmp}/a-file/sub"], "a-file is a file; the output must be a folder"),
    (["--dataset", "addsub"], "addsub.jsonl:2: gold answer 'lots' is not a number"),
    (["--dataset", "singleop"], "singleop.jsonl: no problems in it (empty file)"),
    (["--dataset", "mawps"], "multiarith.jsonl (from --data-dir) and found nothing"),
    (["--data-dir", "{tmp}/a-file"], "'--data-dir'"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_eval_input_is_refused_before_the_model_loads(args, message, tmp_path, broken_model, capsys, monkeypatch):
    """Exit 2, the message, no traceback, nothing written. `--model` is a folder that cannot be
    loaded: an error about anything else proves the model was never touched."""
    (tmp_path / "a-file").write_text("x")
    configs = {"none": None, "malformed": "{oops", "list": "[1]",
               "noweights": '{"peft_type": "LORA", "base_model_name_or_path": "x"}'}
    fill = {"{tmp}": str(tmp_path), "{data}": str(data_root(tmp_path))}
    for name, config in configs.items():
        if f"{{adapter:{name}}}" in " ".join(args):
            fill[f"{{adapter:{name}}}"] = str(adapter_folder(tmp_path, config, weights=name != "noweights"))
    for k, v in fill.items():
        args = [a.replace(k, v) for a in args]
    out = args[args.index("--out") + 1] if "--out" in args else str(tmp_path / "out")
    argv = ["--dataset", "svamp", "--model", str(broken_model), "--data-dir", fill["{data}"], "--out", out,
            "--no-progress", *args]
    code, stdout, stderr = eval_in_process(argv, capsys, monkeypatch)
    assert code == 2, stderr
    assert message in " ".join(stderr.replace("│", " ").split()), stderr  # rich boxes wrap long lines
    assert "Traceback" not in stderr and "broken-model" not in stderr and stdout == ""
    assert not (tmp_path / "out").exists()


def test_every_eval_option_has_help():
    import typer.main

    from mathdistill.cli import app

    command = typer.main.get_command(app).commands["eval"]
    assert [p.name for p in command.params if not p.help] == []


def test_a_good_input_does_reach_the_broken_model(tmp_path, broken_model, capsys, monkeypatch):
    """The control for the table above: with nothing wrong but the model, the model is what fails."""
    argv = ["--dataset", "svamp", "--model", str(broken_model), "--data-dir", str(data_root(tmp_path)),
            "--out", str(tmp_path / "out"), "--no-progress"]
    code, _, stderr = eval_in_process(argv, capsys, monkeypatch)
    assert code == 2 and f"cannot load model '{broken_model}'" in stderr and "Traceback" not in stderr


def test_a_bad_thought_fails_before_torch_is_imported(tmp_path, broken_model):
    """In a fresh process: the error is about the thought, and torch was never imported."""
    code = ("import sys\nfrom mathdistill.cli import main\n"
            "try:\n    main()\nfinally:\n    print('torch imported:', 'torch' in sys.modules, file=sys.stderr)\n")
    for thought, message in [("knowledge", "gives no answer"), ("xyz", "unknown --thought 'xyz'")]:
        argv = ["eval", "--dataset", "svamp", "--model", str(broken_model), "--thought", thought,
                "--out", str(tmp_path / "out")]
        proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "torch imported: False" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
