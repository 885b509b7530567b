"""Reference rationales converted from GSM8K gold solutions, verified by execution."""

from __future__ import annotations

import pytest

from mathdistill import thoughts
from mathdistill.data import Problem, load
from mathdistill.thoughts import reference

N = 60


@pytest.fixture(scope="module")
def train(data_dir):
    return load("gsm8k", "train", data_dir=data_dir, limit=N)


def test_convert_first_problem(train):
    pot = reference.convert(train[0], "pot")
    assert pot.splitlines()[1] == "clips_in_may = 48 / 2"
    assert "48 + clips_in_may" in pot and pot.splitlines()[-1].startswith("ans = ")
    assert reference.convert(train[0], "cot").endswith("The answer is 72.")
    assert "<<" not in reference.convert(train[0], "cot")
    assert reference.convert(train[0], "eot").startswith("% Natalia sold")


def test_each_format_class_writes_its_reference(train):
    assert reference.reference_formats() == reference.FORMATS == ("cot", "pot", "eot")
    p = train[0]
    assert thoughts.get("pot").reference(p) == (
        "# Natalia sold 48/2 = 24 clips in May.\nclips_in_may = 48 / 2\n"
        "# Natalia sold 48+24 = 72 clips altogether in April and May.\nclips_altogether = 48 + clips_in_may\n"
        "ans = clips_altogether")
    assert thoughts.get("cot").reference(p) == (
        "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.\n"
        "The answer is 72.")
    for q in train[:10]:  # pot and eot: the same steps, each with its own comment mark
        pot, eot = thoughts.get("pot").reference(q), thoughts.get("eot").reference(q)
        assert (pot is None) == (eot is None)
        if pot is not None:
            assert [ln for ln in pot.splitlines() if not ln.startswith("# ")] == \
                   [ln for ln in eot.splitlines() if not ln.startswith("% ")]
        for name in reference.FORMATS:
            assert reference.convert(q, name) == thoughts.get(name).reference(q)
    for name in set(thoughts.NAMES) - set(reference.FORMATS):
        with pytest.raises(NotImplementedError):
            thoughts.get(name).reference(p)


def test_coverage_and_every_kept_rationale_scores(train, tmp_path, monkeypatch):
    monkeypatch.setenv("MATHDISTILL_CACHE", str(tmp_path))
    cov = reference.coverage(train)
    for name in reference.FORMATS:
        assert cov[name]["total"] == N and cov[name]["rate"] >= 0.9, cov
        refs = reference.reference_rationales(train, name)  # now from the cache
        assert (tmp_path / "reference" / f"{name}.jsonl").exists()
        kept = [(p, refs[p.id]) for p in train if refs[p.id] is not None]
        scored = thoughts.get(name).score_batch([r for _, r in kept], [p.answer for p, _ in kept])
        assert all(s.correct for s in scored)


def test_wrong_gold_arithmetic_is_dropped():
    bad = Problem("x", "Tom has 3 bags of 4 apples. How many apples?", "13", "gsm8k",
                  {"solution": "He has 3*4=<<3*4=13>>13 apples.\n#### 13"})
    assert reference.convert(bad, "cot") is None
    assert reference.reference_rationale(bad, "cot") is None
    # the program computes 12, not the (wrong) gold 13: execution catches it
    assert reference.convert(bad, "pot") is not None and reference.reference_rationale(bad, "pot") is None


def test_errors():
    p = Problem("y", "q", "1", "svamp", {})
    with pytest.raises(ValueError, match="solution"):
        reference.convert(p, "pot")
    with pytest.raises(ValueError, match="no reference conversion"):
        reference.convert(p, "l2m")


def test_training_rows_are_prompt_completion_pairs_from_gsm8k_train(data_dir):
    rows = reference.training_rows(4, data_dir=data_dir)
    later = reference.training_rows(4, offset=100, data_dir=data_dir)
    first = load("gsm8k", "train", data_dir=data_dir, limit=1)[0]
    assert rows[0] == {"prompt": first.question, "completion": reference.convert(first, "cot")}
    assert all(r["completion"].endswith(".") and "The answer is" in r["completion"] for r in rows)
    assert not {r["prompt"] for r in rows} & {r["prompt"] for r in later}
    assert reference.training_rows(2, "pot", data_dir=data_dir)[0]["completion"].rstrip().splitlines()[-1].startswith("ans = ")
    with pytest.raises(ValueError, match="fewer than 9000"):
        reference.training_rows(9000, data_dir=data_dir)
