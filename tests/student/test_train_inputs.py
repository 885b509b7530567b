"""What `train` accepts and refuses before any model loads: teach output (--thought), TRL `messages` rows,
malformed adapter folders, a folder as --data, a file as --out, out-of-range settings. No model is loaded."""

from __future__ import annotations

import json

import pytest

from mathdistill import thoughts
from mathdistill.io import InputError
from mathdistill.student.adapters import check_adapter, load_merged, load_with_adapters
from mathdistill.student.train import TrainConfig, data_identity, load_rows, rows_from_rationales, train


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def rationale(i, thought="cot", kept=True, text=None):
    """A row as `mathdistill teach` writes it."""
    return {"problem_id": f"gsm8k-train-{i}", "question": f"Tom has {i} apples and eats one. How many are left?",
            "gold": str(i - 1), "thought": thought, "sample": 0, "text": text or f"{i} - 1 = {i - 1}. The answer is {i - 1}.",
            "prediction": str(i - 1), "correct": kept, "error": None, "kept": kept}


# ------------------------------------------------------------------------------------ teach output


def test_teach_output_becomes_the_rows_the_recipes_build(tmp_path):
    rows = [rationale(3), rationale(4, kept=False), rationale(5, "pot", text="ans = 5 - 1"), rationale(6)]
    f = write(tmp_path / "rationales.jsonl", rows)
    cot, pot = thoughts.get("cot"), thoughts.get("pot")
    expected_cot = [{"prompt": cot.student_prompt(r["question"]), "completion": cot.student_target(r["text"])}
                    for r in (rows[0], rows[3])]  # kept cot rows only, in order
    assert load_rows(f, ["cot"]) == expected_cot
    assert expected_cot[0]["prompt"].endswith(f"{cot.trigger} {cot.instruction}")  # the format's trigger tag
    both = load_rows(f, ["cot", "pot"])
    assert both[1] == {"prompt": pot.student_prompt(rows[2]["question"]), "completion": "ans = 5 - 1"}
    # the recipes' data builder is the same function, with the ids kept
    built = rows_from_rationales(f, ["cot"])
    assert [{"prompt": r["prompt"], "completion": r["completion"]} for r in built] == expected_cot
    assert [(r["thought"], r["problem_id"]) for r in built] == [("cot", "gsm8k-train-3"), ("cot", "gsm8k-train-6")]


def test_teach_output_errors(tmp_path):
    f = write(tmp_path / "r.jsonl", [rationale(3)])
    with pytest.raises(InputError, match=r"r.jsonl:1: a teach rationale row .*--thought"):
        load_rows(f)
    with pytest.raises(InputError, match=r"--thought: unknown thought 'xyz'"):
        load_rows(f, ["xyz"])
    f = write(tmp_path / "none.jsonl", [rationale(3, kept=False), rationale(4, "pot")])
    with pytest.raises(InputError, match=r"none.jsonl: none of its 2 rationale rows is a kept one of cot"):
        load_rows(f, ["cot"])
    bad = {**rationale(3)}
    del bad["kept"]
    with pytest.raises(InputError, match=r"b.jsonl:2: missing key 'kept'"):
        load_rows(write(tmp_path / "b.jsonl", [rationale(1), bad]), ["cot"])
    with pytest.raises(InputError, match=r"c.jsonl:1: 'text' of a kept rationale must be a non-empty string"):
        load_rows(write(tmp_path / "c.jsonl", [{**rationale(1), "text": None}]), ["cot"])


# ------------------------------------------------------------------------------------ messages rows


def test_messages_rows_last_assistant_turn_is_the_completion(tmp_path):
    system = {"role": "system", "content": "You are a careful tutor."}
    rows = [
        {"messages": [{"role": "user", "content": "What is 2+3?"}, {"role": "assistant", "content": "5"}]},
        {"messages": [system, {"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"},
                      {"role": "user", "content": "And 2+2?"}, {"role": "assistant", "content": "4"}]},
    ]
    got = load_rows(write(tmp_path / "m.jsonl", rows))
    # a lone user turn is the same row as {"prompt", "completion"} (same data hash)
    assert got[0] == {"prompt": "What is 2+3?", "completion": "5"}
    assert data_identity(got[:1]) == data_identity([{"prompt": "What is 2+3?", "completion": "5"}])
    assert got[1] == {"prompt": rows[1]["messages"][:-1], "completion": "4"}


@pytest.mark.parametrize("messages, message", [
    ("hi", r"'messages' must be a list"),
    ([{"role": "assistant", "content": "5"}], r"'messages' must be a list of turns ending with a user and an assistant"),
    ([{"role": "user", "content": "q"}, {"role": "assistant"}], r"messages\[1\] must be an object with string 'role' and 'content'"),
    ([{"role": "user", "content": "q"}, {"role": "robot", "content": "a"}], r"messages\[1\]: role 'robot'"),
    ([{"role": "assistant", "content": "q"}, {"role": "user", "content": "a"}], r"the last message must be the assistant's"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}], r"the last message must be the assistant's"),
    ([{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}], r"the turn before the last .* must be the user's"),
])
def test_bad_messages_rows_are_named_by_file_and_line(tmp_path, messages, message):
    f = write(tmp_path / "m.jsonl", [{"prompt": "q", "completion": "a"}, {"messages": messages}])
    with pytest.raises(InputError, match=r"m.jsonl:2: " + message):
        load_rows(f)


def test_messages_prompt_is_rendered_by_the_chat_template(student_path):
    from mathdistill.models import load_tokenizer
    from mathdistill.student.train import tokenize_rows

    tok = load_tokenizer(student_path)
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"},
             {"role": "assistant", "content": "2"}, {"role": "user", "content": "2+2?"}]
    [ex], dropped = tokenize_rows(tok, [{"prompt": turns, "completion": "4"}], 128)
    prompt = tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    n = sum(1 for m in ex["completion_mask"] if m == 0)
    assert not dropped and tok.decode(ex["input_ids"][:n]) == prompt
    assert tok.decode(ex["input_ids"][n:]) == "4<|im_end|>"


# ------------------------------------------------------------------------------------ files and folders


def test_folder_as_data_and_file_as_out_are_refused(tmp_path):
    with pytest.raises(InputError, match=r"is a folder; give a JSONL file"):
        load_rows(tmp_path)
    data = write(tmp_path / "d.jsonl", [{"prompt": "q", "completion": "a"}])
    (tmp_path / "taken").write_text("not a folder")
    with pytest.raises(InputError, match=r"taken: is a file; the training output \(--out\) must be a folder"):
        train(TrainConfig(max_steps=1), data, tmp_path / "taken")
    assert (tmp_path / "taken").read_text() == "not a folder"


@pytest.mark.parametrize("key, value", [("batch_size", 0), ("max_steps", -5), ("lr", 0.0), ("epochs", 0),
                                        ("max_seq_len", 0), ("packing", "zip"), ("precision", "fp8")])
def test_out_of_range_settings_are_refused(key, value):
    with pytest.raises(ValueError, match=key):
        TrainConfig(**{key: value})


# ------------------------------------------------------------------------------------ adapter folders


def adapter_dir(tmp_path, config, weights=True):
    d = tmp_path / "ad"
    d.mkdir(exist_ok=True)
    (d / "adapter_config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if weights:
        (d / "adapter_model.safetensors").write_bytes(b"")
    return d


GOOD = {"peft_type": "LORA", "base_model_name_or_path": "/some/base", "r": 8}


@pytest.mark.parametrize("config, weights, message", [
    ("{not json", True, r"adapter_config.json:1: invalid JSON"),
    ("[1, 2]", True, r"adapter_config.json: expected a JSON object, got list"),
    ({**GOOD, "peft_type": None}, True, r"adapter_config.json: 'peft_type' is None"),
    ({**GOOD, "peft_type": "MAGIC"}, True, r"adapter_config.json: 'peft_type' is 'MAGIC'"),
    ({k: v for k, v in GOOD.items() if k != "base_model_name_or_path"}, True,
     r"adapter_config.json: missing 'base_model_name_or_path'"),
    (GOOD, False, r"has no adapter weights"),
])
def test_malformed_adapter_folders_are_named_before_the_model_loads(tmp_path, config, weights, message):
    d = adapter_dir(tmp_path, config, weights)
    with pytest.raises(InputError, match=message):
        check_adapter(d, "cot")
    # the base model name is never looked at: the adapter is refused first
    with pytest.raises(InputError, match=r"adapter 'x': .*" + message):
        load_with_adapters("no-such-model", {"x": d})
    with pytest.raises(InputError, match=message):
        load_merged("no-such-model", d)
    data = write(tmp_path / "d.jsonl", [{"prompt": "q", "completion": "a"}])
    with pytest.raises(InputError, match=r"adapter 'frozen': .*" + message):
        train(TrainConfig(frozen_adapters={"frozen": str(d)}, max_steps=1), data, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_adapter_folders(tmp_path):
    with pytest.raises(InputError, match=r"adapter 'a': .*nope not found"):
        check_adapter(tmp_path / "nope", "a")
    with pytest.raises(InputError, match=r"has no adapter_config.json"):
        check_adapter(tmp_path, "a")
    (tmp_path / "f").write_text("")
    with pytest.raises(InputError, match=r"f is not a folder"):
        check_adapter(tmp_path / "f", "a")
    assert check_adapter(adapter_dir(tmp_path, GOOD)).name == "adapter_model.safetensors"


def test_a_folder_without_a_record_is_not_taken_for_this_run(tmp_path, student_path):
    """A training folder an older version wrote (train_config.json, no record of data or model) is refused."""
    out = tmp_path / "old"
    out.mkdir()
    (out / "train_config.json").write_text(json.dumps({"model": student_path}))
    (out / "train_result.json").write_text("{}")
    data = write(tmp_path / "d.jsonl", [{"prompt": "q", "completion": "a"}])
    with pytest.raises(InputError, match=r"old holds a training run on something else \(it has no record of its data"
                                         r".*--restart"):
        train(TrainConfig(model=student_path, max_steps=1), data, out)
    assert sorted(p.name for p in out.iterdir()) == ["train_config.json", "train_result.json"]
