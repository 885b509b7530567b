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
    ("mawps", "test"): (2065, "multiarith-test-0", "39"),  # the four MAWPS sets, one after another
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
    assert all(p.question.strip() and p.answer for p in problems)
    assert all(p.source == name for p in problems) or name == "mawps"


def test_mawps_is_all_four_sets_with_ids_that_name_the_set(data_dir):
    parts = ("multiarith", "addsub", "singleeq", "singleop")
    mawps = load("mawps", data_dir=data_dir)
    assert [p.id for p in mawps] == [p.id for part in parts for p in load(part, data_dir=data_dir)]
    for p in mawps:
        assert p.source in parts and p.id.startswith(f"{p.source}-test-")
    assert [p.source for p in load("mawps", data_dir=data_dir, limit=601)[-2:]] == ["multiarith", "addsub"]
    with pytest.raises(InputError, match="dataset 'mawps' has no split 'train'"):
        load("mawps", "train", data_dir=data_dir)


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
    (tmp_path / "svamp" / "SVAMP.json").write_text('[\n {"Body": "b", "Question": "q", "Answer": 1.0},\n\n {"Body": "b"}]')
    with pytest.raises(InputError, match=r"SVAMP.json:4 \(record 1\): missing key 'Question'"):
        load("svamp", data_dir=tmp_path)
    (tmp_path / "asdiv").mkdir()
    (tmp_path / "asdiv" / "ASDiv.xml").write_text("<ProblemSet>\n<Problem ID='x'>\n</ProblemSet>")
    with pytest.raises(InputError, match=r"ASDiv.xml:3: invalid XML"):
        load("asdiv", data_dir=tmp_path)


def write(root, rel, text):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text) if isinstance(text, str) else path.write_bytes(text)
    return path


GOOD = json.dumps({"input": "Tom has 2 apples and gets 3 more. How many now?", "target": 5})


@pytest.mark.parametrize("name,rel,text,message", [
    # a gold answer that is not a number, in a numeric dataset: named with file:line
    ("singleop", "mawps/singleop.jsonl", GOOD + "\n" + json.dumps({"input": "q?", "target": "five"}) + "\n",
     r"singleop.jsonl:2: gold answer 'five' is not a number"),
    ("gsm8k", "gsm8k/test.jsonl", json.dumps({"question": "q?", "answer": "x\n#### many"}) + "\n",
     r"test.jsonl:1: gold answer 'many' is not a number"),
    ("gsm_hard", "gsm_hard/test.jsonl", json.dumps({"input": "q?", "target": None}) + "\n",
     r"test.jsonl:1: empty gold answer"),
    ("svamp", "svamp/SVAMP.json", '[\n  {"Body": "b", "Question": "q?", "Answer": "12 or 13"}\n]',
     r"SVAMP.json:2 \(record 0\): gold answer '12 or 13' is not a number"),
    # empty inputs are errors, never an empty benchmark
    ("addsub", "mawps/addsub.jsonl", "", r"addsub.jsonl: no problems in it \(empty file\)"),
    ("addsub", "mawps/addsub.jsonl", "\n\n", r"addsub.jsonl: no problems in it"),
    ("svamp", "svamp/SVAMP.json", "[]", r"SVAMP.json: no problems in it"),
    ("svamp", "svamp/SVAMP.json", "", r"SVAMP.json: no problems in it"),
    ("asdiv", "asdiv/ASDiv.xml", "<ProblemSet></ProblemSet>", r"ASDiv.xml: no problems in it"),
    # malformed files
    ("singleeq", "mawps/singleeq.jsonl", GOOD + "\n[1, 2]\n", r"singleeq.jsonl:2: expected a JSON object"),
    ("singleeq", "mawps/singleeq.jsonl", GOOD.encode() + b"\n" + b'{"input": "caf\xe9"}\n',
     r"singleeq.jsonl(:2)?: not a UTF-8 text file"),
    ("svamp", "svamp/SVAMP.json", b'[{"Body": "caf\xe9"}]', r"SVAMP.json: not a UTF-8 text file"),
    ("multiarith", "mawps/multiarith.jsonl", GOOD + "\n" + json.dumps({"input": " ", "target": 1}) + "\n",
     r"multiarith.jsonl:2: empty question"),
    ("svamp", "svamp/SVAMP.json", '{"ID": 1}', r"SVAMP.json: expected a JSON list"),
    ("svamp", "svamp/SVAMP.json", '[{"ID": "a", "Body": "b", "Question": "q", "Answer": 1},\n'
     '{"ID": "a", "Body": "c", "Question": "q", "Answer": 2}]', r"SVAMP.json:2 \(record 1\): id 'a' again \(first at .*SVAMP.json:1"),
    ("math500", "math500/test.jsonl", json.dumps({"problem": "p", "answer": ""}) + "\n", r"test.jsonl:1: empty gold answer"),
])
def test_bad_data_files_name_file_and_line(tmp_path, name, rel, text, message):
    write(tmp_path, rel, text)
    with pytest.raises(InputError, match=message):
        load(name, data_dir=tmp_path)


def test_text_answers_are_fine_where_the_benchmark_has_them(tmp_path):
    write(tmp_path, "math500/test.jsonl", json.dumps({"problem": "p", "answer": "\\frac{\\pi}{2}"}) + "\n")
    assert load("math500", data_dir=tmp_path)[0].answer == "\\frac{\\pi}{2}"
    write(tmp_path, "asdiv/ASDiv.xml", "<ProblemSet><Problem ID='a'><Body>b</Body><Question>Who?</Question>"
          "<Answer>Mrs. Hilt</Answer></Problem></ProblemSet>")
    assert load("asdiv", data_dir=tmp_path)[0].answer == "Mrs. Hilt"


def test_a_folder_where_a_file_belongs(tmp_path):
    (tmp_path / "gsm8k" / "test.jsonl").mkdir(parents=True)
    with pytest.raises(InputError, match=r"test.jsonl: is a folder; expected a data file"):
        load("gsm8k", data_dir=tmp_path)
    with pytest.raises(InputError, match=r"--data-dir .*: not a folder"):
        load("gsm8k", data_dir=write(tmp_path, "afile", "x"))


@pytest.mark.parametrize("limit", [0, -5, 2.5, True])
def test_limit_must_be_a_positive_integer(data_dir, limit):
    with pytest.raises(InputError, match="limit must be an integer >= 1"):
        load("svamp", data_dir=data_dir, limit=limit)
