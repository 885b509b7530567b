"""Calculation marks in cot training targets (issue 16, Build 4): off by default and byte-identical,
`keep` keeps the GSM8K notes the calculator agrees with, `add` marks right written steps only, and
every mark is exactly what calculator decoding forces there (checked with the calculator's own code)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from mathdistill import thoughts
from mathdistill.data import Problem, load
from mathdistill.io import InputError
from mathdistill.answers.arithmetic import calculation
from mathdistill.thoughts import reference
from mathdistill.thoughts.calcmarks import MAX_SPAN, add_marks, keep_notes, mark_values

N = 300
# sha256 over repr(CoT().reference(p)) for the first 300 GSM8K train problems, then student_target of
# the first 300 recorded Llama-3-70B rationales (untagged, tagged), computed with the code before marks
# existed (commit 90466fb): calc_marks "none" must give exactly these bytes.
TODAY = "eb25481eeae54f921ce2125d9e55e8f4848da93e822e6c5d4c36a96572e132a7"


@pytest.fixture(scope="module")
def train(data_dir):
    return load("gsm8k", "train", data_dir=data_dir, limit=N)


@pytest.fixture(scope="module")
def recorded(data_dir):
    return [r["output"] for r in json.loads((data_dir / "teacher" / "gsm8k_train_llama3-70b_cot.json").read_text())[:N]]


def unmark(text: str) -> str:
    return text.replace("<<", "").replace(">>", "")


def test_off_is_byte_identical_to_before(train, recorded):
    for cot in (thoughts.get("cot"), thoughts.get("cot", calc_marks="none")):
        h = hashlib.sha256()
        for p in train:
            h.update(repr(cot.reference(p)).encode())
        for r in recorded:
            h.update(cot.student_target(r).encode())
            h.update(cot.student_target(r, tagged=True).encode())
        assert h.hexdigest() == TODAY
    assert all("<<" not in (thoughts.get("cot").reference(p) or "") for p in train)


def test_keep_keeps_notes_the_calculator_agrees_with(train):
    keep = thoughts.get("cot", calc_marks="keep")
    assert keep.reference(train[0]) == ("Natalia sold <<48/2=24>>24 clips in May.\n"
                                        "Natalia sold <<48+24=72>>72 clips altogether in April and May.\n"
                                        "The answer is 72.")
    assert keep.reference(train[1]).splitlines()[0] == "Weng earns $<<12/60=0.2>>0.2 per minute."
    assert keep_notes("In May she sold <<48/2=24>>24 clips.") == "In May she sold <<48/2=24>>24 clips."
    # a note the calculator writes otherwise (it forces 33.3333) or does not evaluate: dropped as today
    assert keep_notes("Each gets 100 / 3 = <<100/3=33.33>>33.33 cents.") == "Each gets 100 / 3 = 33.33 cents."
    assert keep_notes("That is <<2^3=8>>8 cubes.") == "That is 8 cubes."
    # a written step of another value before the note: the note goes (the written text stays)
    assert keep_notes("She has 5 + 3 = <<4*3=12>>12 pens.") == "She has 5 + 3 = 12 pens."
    kept = [keep.reference(p) for p in train]
    assert sum("<<" in (t or "") for t in kept) > N // 2  # most gold solutions keep notes
    # recorded teacher text has no notes: keep leaves it alone
    assert keep.student_target("So 48 / 2 = 24.\nThe answer is 24.") == "So 48 / 2 = 24.\nThe answer is 24."


def test_add_marks_right_steps_only():
    text = ("She sold 48 / 2 = 24 clips and 5 + 3 = 9 pens; 16 * 0.60 = 9.6 and 16 * 0.6 = 9.60.\n"
            "Then 12 * 50 = $600, 2^3 = 8, x + 3 = 5, the dogs = 4 and 1,200 / 4 = 300.\n"
            "Half of 3 + 4 = 7 (so (2 + 2 = 4)).\n"
            "The answer is 2 + 5 = 7.")
    assert add_marks(text) == (
        "She sold <<48 / 2 = 24>> clips and 5 + 3 = 9 pens; <<16 * 0.60 = 9.6>> and 16 * 0.6 = 9.60.\n"
        "Then 12 * 50 = $600, 2^3 = 8, x + 3 = 5, the dogs = 4 and <<1,200 / 4 = 300>>.\n"
        "Half of <<3 + 4 = 7>> (so (<<2 + 2 = 4>>)).\n"
        "The answer is 2 + 5 = 7.")
    assert add_marks(add_marks(text)) == add_marks(text)  # idempotent
    assert unmark(add_marks(text)) == text  # only marks are added
    long = " + ".join(["1"] * (MAX_SPAN // 4 + 1))  # longer than the decoder looks back: not marked
    assert add_marks(f"{long} = {MAX_SPAN // 4 + 1}") == f"{long} = {MAX_SPAN // 4 + 1}"
    assert add_marks("1 + 1 + 1 = 3") == "<<1 + 1 + 1 = 3>>"
    one_line = "So 60 / 2 = 30 left, 30 - 9 = 21. The answer is 21"
    assert add_marks(one_line) == "So <<60 / 2 = 30>> left, <<30 - 9 = 21>>. The answer is 21"


def test_add_on_real_targets_keeps_answers_and_only_right_values(train, recorded):
    add = thoughts.get("cot", calc_marks="add")
    gold = [t for t in (add.reference(p) for p in train) if t]
    targets = [add.student_target(r) for r in recorded]
    assert sum("<<" in t for t in targets) > N // 2
    for r, t in zip(recorded, targets):
        assert unmark(t) == r.strip()
        assert add.extract(t).prediction == add.extract(r).prediction  # answer extraction unchanged
    plain = thoughts.get("cot")
    scored = plain.score_batch(gold, [p.answer for p in train if add.reference(p)])
    assert sum(s.correct for s in scored) == len(gold)  # marked gold still scores right
    for t in gold + targets:
        values = mark_values(t)
        assert len(values) == t.count("<<")
        for prefix, value in values:
            assert calculation(prefix) == value  # what the calculator forces after the mark's "="


def test_marks_agree_with_the_decoders_forced_tokens(student_path, train, recorded):
    """Tokenize the marked targets as training does; at each mark's `=` token the generation hook's
    Calculator fires and forces exactly the tokens that follow in the target (the written value),
    and `>>` comes next: the student writes `<<expr=`, the decoder the value, the student `>>`."""
    from mathdistill.student.calculator import TAIL_TOKENS, Calculator
    from mathdistill.models import load_tokenizer

    tok = load_tokenizer(student_path)
    calc = Calculator(tok)
    triggers = set(calc.triggers)
    add = thoughts.get("cot", calc_marks="add")
    targets = [t for t in (add.reference(p) for p in train[:60]) if t] + [add.student_target(r) for r in recorded[:60]]
    checked = 0
    for target in targets:
        ids = tok.encode(target, add_special_tokens=False)
        ends = [len(tok.decode(ids[: k + 1])) for k in range(len(ids))]  # where each token's text ends
        for prefix, value in mark_values(target):
            k = ends.index(len(prefix))  # the mark's `=` ends a token
            assert ids[k] in triggers
            start = max(0, k + 1 - TAIL_TOKENS)  # what the hook decodes: the last TAIL_TOKENS tokens
            forced = calc.forced(ids[start: k + 1], at_start=start == 0)
            assert forced is not None and ids[k + 1: k + 1 + len(forced)] == forced, (target, prefix)
            assert tok.decode(forced) == value and target[len(prefix) + len(value):].startswith(">>")
            checked += 1
    assert checked > 100


def test_reference_rationales_with_marks(train, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MATHDISTILL_CACHE", str(tmp_path))
    got = reference.reference_rationales(train[:20], "cot", calc_marks="keep")
    assert got[train[0].id].startswith("Natalia sold <<48/2=24>>24 clips")
    obj = reference.reference_rationales(train[:20], thoughts.get("cot", calc_marks="keep"))
    assert obj == got
    plain = reference.reference_rationales(train[:20], "cot")
    assert "<<" not in plain[train[0].id]
    rows = reference.training_rows(3, "cot", data_dir=data_dir, calc_marks="add")
    assert rows[0]["completion"].startswith("Natalia sold <<48/2=24>>24")
    with pytest.raises(InputError, match="calc_marks"):
        reference.convert(train[0], "pot", calc_marks="add")
    with pytest.raises(ValueError, match="calc_marks"):
        thoughts.get("cot", calc_marks="sometimes")


def test_recipe_field():
    from mathdistill.methods.registry import load_config

    assert load_config(None, ["name=x", "method=cot"]).data.calc_marks == "none"
    assert load_config(None, ["name=x", "method=cot", "data.calc_marks=add"]).data.calc_marks == "add"
    with pytest.raises(InputError, match="data.calc_marks"):
        load_config(None, ["name=x", "method=cot", "data.calc_marks=yes"])


def test_cli_marks_rows(tmp_path):
    rows = [{"prompt": "q", "completion": "So 5 + 3 = 8.\nThe answer is 8."},
            {"question": "q", "text": "2 * 3 = 6. The answer is 6", "thought": "cot", "kept": True},
            {"question": "q", "text": "x = 2 * 3\nans = x", "thought": "pot", "kept": True}]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = subprocess.run([sys.executable, "-m", "mathdistill.thoughts.calcmarks", str(src), str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["marked"] == 2
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert got[0]["completion"] == "So <<5 + 3 = 8>>.\nThe answer is 8."
    assert got[1]["text"] == "<<2 * 3 = 6>>. The answer is 6" and got[2] == rows[2]
    src.write_text('{"prompt": "q", "completion": 3}\n')
    r = subprocess.run([sys.executable, "-m", "mathdistill.thoughts.calcmarks", str(src), str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "in.jsonl:1" in r.stderr and "Traceback" not in r.stderr


def test_gold_problem_with_wrong_note_is_still_dropped():
    p = Problem(id="x", question="q", answer="9", source="gsm8k",
                extra={"solution": "He has 5+3 = <<5+3=9>>9.\n#### 9"})
    for mode in ("none", "keep", "add"):
        assert thoughts.get("cot", calc_marks=mode).reference(p) is None
