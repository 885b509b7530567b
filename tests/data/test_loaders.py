"""Every benchmark in the shared data folder loads into Problems with the right gold answers."""

import json

import pytest

from mathdistill.answers import is_equivalent
from mathdistill.data import available, gsm8k_gold, load
from mathdistill.io import InputError

EXPECTED = {  # dataset, split -> (records, first id, first gold)
    ("gsm8k", "train"): (7473, "gsm8k-train-0", "72"),
    ("gsm8k", "test"): (1319, "gsm8k-test-0", "18"),
    ("svamp", "test"): (1000, "chal-1", "51"),
    ("asdiv", "test"): (2305, "nluds-0001", "9"),
    ("multiarith", "test"): (600, "multiarith-test-0", "39"),
    ("addsub", "test"): (395, "addsub-test-0", "43"),
    ("singleeq", "test"): (508, "singleeq-test-0", "43"),
    ("singleop", "test"): (562, "singleop-test-0", "14"),
    ("gsm_hard", "test"): (1319, "gsm_hard-test-0", "-9867630"),
    ("math500", "test"): (500, "test/precalculus/807.json", "\\left( 3, \\frac{\\pi}{2} \\right)"),
}


def test_every_dataset_is_covered():
    assert sorted({name for name, _ in EXPECTED}) == available()


@pytest.mark.parametrize("name,split", sorted(EXPECTED))
def test_loader(data_dir, name, split):
    n, first_id, first_gold = EXPECTED[(name, split)]
    problems = load(name, split, data_dir=data_dir)
    assert len(problems) == n
    assert problems[0].id == first_id
    assert problems[0].answer == first_gold
    assert len({p.id for p in problems}) == n, "ids must be unique"
    assert all(p.question.strip() and p.answer and p.source == name for p in problems)


def test_limit_and_env(data_dir, monkeypatch):
    monkeypatch.setenv("MATHDISTILL_DATA", str(data_dir))
    assert len(load("svamp", limit=5)) == 5


def test_question_joins_body_and_question(data_dir):
    p = load("svamp", data_dir=data_dir, limit=1)[0]
    assert p.question.startswith("Each pack of dvds costs 76 dollars.")
    assert p.question.endswith("How much do you have to pay to buy each pack?")
    a = load("asdiv", data_dir=data_dir, limit=1)[0]
    assert a.question == "Seven red apples and two green apples are in the basket. How many apples are in the basket?"
    assert a.extra["Formula"] == "7+2=9"


def test_gsm8k_keeps_solution_and_gold_matches(data_dir):
    p = load("gsm8k", "train", data_dir=data_dir, limit=1)[0]
    assert p.extra["solution"].endswith("#### 72")
    assert gsm8k_gold("... #### 1,234") == "1234"
    with pytest.raises(ValueError):
        gsm8k_gold("no answer line")


def test_gold_forms_per_dataset(data_dir):
    # SVAMP floats like 51.0, ASDiv "9 (apples)", GSM-Hard floats, MAWPS floats all become plain numbers
    svamp = load("svamp", data_dir=data_dir)
    assert all("." not in p.answer or not p.answer.endswith(".0") for p in svamp)
    asdiv = {p.id: p for p in load("asdiv", data_dir=data_dir)}
    assert all("(" not in p.answer for p in asdiv.values())
    hard = load("gsm_hard", data_dir=data_dir)
    assert all(is_equivalent(p.answer, p.answer) for p in hard[:50])


def test_unknown_dataset_and_split():
    with pytest.raises(InputError, match="unknown dataset 'nope'"):
        load("nope")
    with pytest.raises(InputError, match="no split 'train'"):
        load("svamp", "train")


def test_missing_dataset_says_where_it_looked(tmp_path):
    with pytest.raises(InputError, match=str(tmp_path / "gsm8k" / "test.jsonl")):
        load("gsm8k", "test", data_dir=tmp_path)


def test_malformed_jsonl_names_file_and_line(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    good = json.dumps({"question": "1+1?", "answer": "#### 2"})
    (tmp_path / "gsm8k" / "test.jsonl").write_text(f"{good}\n{{not json\n")
    with pytest.raises(InputError, match=r"test.jsonl:2: invalid JSON"):
        load("gsm8k", data_dir=tmp_path)
    (tmp_path / "gsm8k" / "test.jsonl").write_text(f"{good}\n\n" + json.dumps({"question": "q"}) + "\n")
    with pytest.raises(InputError, match=r"test.jsonl:3: missing key 'answer'"):
        load("gsm8k", data_dir=tmp_path)
    (tmp_path / "gsm8k" / "test.jsonl").write_text(json.dumps({"question": "q", "answer": "no gold line"}) + "\n")
    with pytest.raises(InputError, match=r"test.jsonl:1: .*####"):
        load("gsm8k", data_dir=tmp_path)


def test_malformed_json_and_xml(tmp_path):
    (tmp_path / "svamp").mkdir()
    (tmp_path / "svamp" / "SVAMP.json").write_text('[{"Body": "b", "Question": "q", "Answer": 1.0}, {"Body": "b"}]')
    with pytest.raises(InputError, match=r"SVAMP.json\[1\]: missing key 'Question'"):
        load("svamp", data_dir=tmp_path)
    (tmp_path / "asdiv").mkdir()
    (tmp_path / "asdiv" / "ASDiv.xml").write_text("<ProblemSet>\n<Problem ID='x'>\n</ProblemSet>")
    with pytest.raises(InputError, match=r"ASDiv.xml:3: invalid XML"):
        load("asdiv", data_dir=tmp_path)
