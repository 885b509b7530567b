"""Bad input, as a new user would type it: every command answers with exit code 2, a one-line
message that names the file and line or the key/option, no traceback, and leaves no file behind.

The commands run in-process through the console entry point (`mathdistill.cli.main`), so the
table costs seconds: every one of these inputs must be refused before a model is loaded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mathdistill import cli

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "recipes" / "quickstart.yaml")


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def ws(tmp_path, data_dir, monkeypatch):
    """A workspace: bad files to point at, and an output folder that must stay as it is."""
    monkeypatch.setenv("MATHDISTILL_DATA", str(data_dir))
    monkeypatch.setenv("MATHDISTILL_RECORDED_URL", "http://127.0.0.1:9/closed")  # nothing is fetched
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "a_file.txt").write_text("not a folder\n")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "bad.jsonl").write_text('{"question": "q", "answer": "1", "rationale": "r"}\n{"question": oops}\n')
    (tmp_path / "no_rationale.jsonl").write_text('{"question": "q", "answer": "1", "rationale": "r"}\n'
                                                 '{"question": "q2", "answer": "2"}\n')
    (tmp_path / "no_completion.jsonl").write_text('{"prompt": "p", "completion": "c"}\n{"prompt": "p2"}\n')
    (tmp_path / "teach_rows.jsonl").write_text(json.dumps(
        {"question": "q", "text": "t", "kept": True, "thought": "cot"}) + "\n")
    (tmp_path / "bad.yaml").write_text("name: x\ntrain: [unclosed\n")
    (tmp_path / "adapter_no_config").mkdir()
    bad_adapter = tmp_path / "adapter_bad_config"
    bad_adapter.mkdir()
    (bad_adapter / "adapter_config.json").write_text("{not json")
    (bad_adapter / "adapter_model.safetensors").write_bytes(b"")
    data = tmp_path / "data" / "gsm8k"
    data.mkdir(parents=True)
    (data / "test.jsonl").write_text('{"question": "q1", "answer": "x #### 3"}\n{"question": "q2", "answer": "no answer here"}\n')
    bad_json = tmp_path / "data_bad_json" / "gsm8k"
    bad_json.mkdir(parents=True)
    (bad_json / "test.jsonl").write_text('{"question": "q1", "answer": "x #### 3"}\n{"question": \n')
    words = tmp_path / "data_words" / "svamp"
    words.mkdir(parents=True)
    (words / "SVAMP.json").write_text(json.dumps(
        [{"ID": "a", "Body": "b", "Question": "q", "Answer": "seven", "Equation": "", "Type": ""}], indent=1))
    not_run = tmp_path / "not_a_run"
    not_run.mkdir()
    broken_run = tmp_path / "broken_run"
    broken_run.mkdir()
    (broken_run / "config.yaml").write_text("name: broken\nmethod: cot\n")
    (broken_run / "manifest.json").write_text('{"schema": 2,\n "stages": [oops]}\n')
    return tmp_path


EVAL = ["eval", "--dataset", "gsm8k", "--limit", "2", "--out", "out/e"]
TRAIN = ["train", "--model", "smollm2-135m", "--out", "out/t"]
TEACH = ["teach", "--dataset", "gsm8k", "--thought", "cot", "--limit", "2", "--out", "out/teach"]
RUN = ["run", QUICKSTART, "runs_dir=out/runs"]

# (case id, argv, [every one of these must appear in the message])
CASES = [
    # eval
    ("eval-unknown-thought", EVAL + ["--thought", "xyz"], ["--thought", "xyz"]),
    ("eval-knowledge-gives-no-answer", EVAL + ["--thought", "knowledge"], ["knowledge", "no answer"]),
    ("eval-unknown-dataset", ["eval", "--dataset", "nope", "--out", "out/e"], ["nope", "dataset"]),
    ("eval-limit-zero", ["eval", "--dataset", "gsm8k", "--limit", "0", "--out", "out/e"], ["--limit"]),
    ("eval-batch-size-zero", EVAL + ["--batch-size", "0"], ["--batch-size"]),
    ("eval-max-new-tokens-negative", EVAL + ["--max-new-tokens", "-1"], ["--max-new-tokens"]),
    ("eval-samples-zero", EVAL + ["--samples", "0"], ["--samples"]),
    ("eval-top-p-above-one", EVAL + ["--top-p", "1.5"], ["--top-p"]),
    ("eval-out-is-a-file", ["eval", "--dataset", "gsm8k", "--limit", "2", "--out", "a_file.txt"], ["a_file.txt"]),
    ("eval-adapter-without-config", EVAL + ["--adapter", "adapter_no_config"], ["adapter_no_config", "adapter_config.json"]),
    ("eval-adapter-malformed-config", EVAL + ["--adapter", "adapter_bad_config"], ["adapter_config.json"]),
    ("eval-data-bad-json-line", EVAL + ["--data-dir", "data_bad_json"], ["test.jsonl:2"]),
    ("eval-gold-not-a-number", EVAL + ["--data-dir", "data"], ["test.jsonl:2"]),
    ("eval-svamp-gold-is-a-word", ["eval", "--dataset", "svamp", "--data-dir", "data_words", "--out", "out/e"],
     ["SVAMP.json", "seven"]),
    # score
    ("score-input-is-a-folder", ["score", "--thought", "cot", "--input", "out", "--output", "out/s.jsonl"], ["out", "folder"]),
    ("score-output-is-a-folder", ["score", "--thought", "cot", "--input", "no_rationale.jsonl", "--output", "out"],
     ["out", "folder"]),
    ("score-input-empty", ["score", "--thought", "cot", "--input", "empty.jsonl", "--output", "out/s.jsonl"],
     ["empty.jsonl", "empty"]),
    ("score-missing-key", ["score", "--thought", "cot", "--input", "no_rationale.jsonl", "--output", "out/s.jsonl"],
     ["no_rationale.jsonl:2", "rationale"]),
    ("score-bad-json", ["score", "--thought", "pot", "--input", "bad.jsonl", "--output", "out/s.jsonl"], ["bad.jsonl:2"]),
    ("score-unknown-thought", ["score", "--thought", "nope", "--input", "bad.jsonl", "--output", "out/s.jsonl"],
     ["--thought", "nope"]),
    # teach
    ("teach-samples-zero", TEACH + ["--replay", "no_rationale.jsonl", "--samples", "0"], ["--samples"]),
    ("teach-limit-negative", ["teach", "--dataset", "gsm8k", "--thought", "cot", "--limit", "-5", "--replay",
                              "no_rationale.jsonl", "--out", "out/teach"], ["--limit"]),
    ("teach-out-is-a-file", ["teach", "--dataset", "gsm8k", "--thought", "cot", "--limit", "2", "--replay",
                             "no_rationale.jsonl", "--out", "a_file.txt"], ["a_file.txt"]),
    ("teach-no-teacher", TEACH, ["teacher"]),
    ("teach-replay-missing", TEACH + ["--replay", "missing.json"], ["missing.json"]),
    ("teach-url-without-model", TEACH + ["--teacher-url", "http://127.0.0.1:9/v1"], ["--teacher-model"]),
    # train
    ("train-data-is-a-folder", TRAIN + ["--data", "out"], ["out", "folder"]),
    ("train-data-empty", TRAIN + ["--data", "empty.jsonl"], ["empty.jsonl"]),
    ("train-row-missing-completion", TRAIN + ["--data", "no_completion.jsonl"], ["no_completion.jsonl:2", "completion"]),
    ("train-batch-size-zero", TRAIN + ["--data", "no_completion.jsonl", "--batch-size", "0"], ["--batch-size"]),
    ("train-out-is-a-file", ["train", "--model", "smollm2-135m", "--data", "no_completion.jsonl", "--out", "a_file.txt"],
     ["a_file.txt"]),
    ("train-teach-rows-without-thought", TRAIN + ["--data", "teach_rows.jsonl"], ["teach_rows.jsonl:1", "--thought"]),
    # run
    ("run-unknown-key", RUN + ["trian.max_steps=3"], ["trian", "unknown key"]),
    ("run-negative-limit", RUN + ["data.train.limit=-5"], ["data.train.limit"]),
    ("run-batch-size-zero", RUN + ["eval.batch_size=0"], ["eval.batch_size"]),
    ("run-unknown-thought", RUN + ["thoughts=[cot, xyz]"], ["thoughts", "xyz"]),
    ("run-unknown-method", RUN + ["method=bogus"], ["method", "bogus"]),
    ("run-unknown-eval-dataset", RUN + ["data.eval=[{dataset: nope, split: test}]"], ["data.eval", "nope"]),
    ("run-offset-past-end", RUN + ["data.train.offset=100000"], ["data.train", "offset"]),
    ("run-recipe-is-a-folder", ["run", "out"], ["out", "folder"]),
    ("run-recipe-bad-yaml", ["run", "bad.yaml"], ["bad.yaml:3", "invalid YAML"]),
    ("run-replay-file-unavailable", RUN + ["teach.per_thought.cot={kind: replay, replay: [teacher/nowhere.json]}"],
     ["teach.per_thought.cot", "nowhere.json"]),
    ("run-train-lr-zero", RUN + ["train.lr=0"], ["train.lr"]),
    ("run-trains-on-what-it-evaluates", RUN + ["data.train.split=test"],  # contract 11
     ["data.train (gsm8k/test [0, 32))", "overlaps data.eval[0] (gsm8k/test [0, 10))"]),
    ("run-overlap-through-offsets", RUN + ["data.eval=[{dataset: gsm8k, split: train, offset: 30, limit: 5}]"],
     ["data.train (gsm8k/train [0, 32))", "data.eval[0] (gsm8k/train [30, 35))", "problems [30, 32)"]),
    # report
    ("report-not-a-run", ["report", "not_a_run"], ["not_a_run", "run folder"]),
    ("report-malformed-manifest", ["report", "broken_run"], ["manifest.json"]),
]


@pytest.mark.parametrize("argv,needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_cleanly(ws, argv, needles, capsys, monkeypatch):
    before = files_under(ws)
    monkeypatch.setattr(sys, "argv", ["mathdistill", *argv])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2, f"exit {exit_info.value.code}\nstdout: {out}\nstderr: {err}"
    assert "Traceback" not in err + out
    message = " ".join(err.split())  # typer/rich wrap long lines in boxes
    for needle in needles:
        assert needle in message, f"{needle!r} not in: {err}"
    assert files_under(ws) == before, f"left behind: {sorted(map(str, files_under(ws) - before))}"


def test_the_table_is_large_enough():
    assert len(CASES) >= 30
    assert {c[1][0] for c in CASES} == {"eval", "score", "teach", "train", "run", "report"}
