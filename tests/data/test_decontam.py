"""Decontamination: a planted paraphrase of a test question is caught (TF-IDF cosine), a copied
13-word span is caught (n-gram), an unrelated problem passes; thresholds are settings; the index
covers every test set in the data root. And the TF-IDF it rests on."""

from __future__ import annotations

import numpy as np
import pytest

from mathdistill.data import Problem
from mathdistill.data.decontam import Decontaminator, histogram, load_test_sets, plot_similarity
from mathdistill.data.tfidf import TfIdf, words
from mathdistill.io import InputError

JANET = ("Janet’s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her "
         "friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh duck "
         "egg. How much in dollars does she make every day at the farmers' market?")
PARAPHRASE = ("Every day Janet's ducks lay 16 eggs. She eats 3 of them for breakfast each morning and uses 4 to bake "
              "muffins for her friends. The rest she sells at the farmers' market for $2 per fresh duck egg. How many "
              "dollars does she make at the farmers' market each day?")
SPAN = ("Carl keeps hens. She eats three for breakfast every morning and bakes muffins for her friends every day "
        "with four, and gives the rest away. How many eggs does Carl give away if the hens lay 20?")
UNRELATED = "A bakery sells 12 loaves in the morning and twice as many in the afternoon. How many loaves does it sell?"


@pytest.fixture(scope="module")
def tests(data_dir) -> list[Problem]:
    """Every test problem of the data root (JANET is GSM8K test problem 0)."""
    return load_test_sets(data_dir)


def test_tfidf_cosine():
    index = TfIdf(["the cat sat on the mat", "a dog barked at the mailman", "stocks fell sharply"])
    s = index.scores(["the cat sat on the mat", "quantum chromodynamics", "the cat sat on the mat quantum gluon"])
    assert s.shape == (3, 3)
    assert s[0, 0] == pytest.approx(1.0, abs=1e-6) and s[0, 2] == 0.0
    assert s[1].max() == 0.0  # no word in common
    assert 0.3 < s[2, 0] < 0.9  # unknown words lengthen the query: a partial match, not a full one
    idx, sim = index.top(["a dog and a mailman"], k=2)
    assert idx[0, 0] == 1 and sim[0, 0] > sim[0, 1]
    assert words("It costs $1,250.50, or 3 apples.") == ["it", "costs", "1250.50", "or", "3", "apples"]


def test_a_planted_paraphrase_is_caught_by_cosine_and_an_unrelated_problem_passes(tests):
    assert tests[0].question == JANET
    dc = Decontaminator(tests)
    para, span, other = dc.check([PARAPHRASE, SPAN, UNRELATED])
    assert para["contaminated"] and para["reason"] == "cosine" and para["ngram"] is None
    assert para["cosine"] >= 0.8 and para["nearest"]["id"] in ("gsm8k-test-0", "gsm_hard-test-0")
    assert span["contaminated"] and span["reason"] == "13-gram"
    assert span["ngram"] in " ".join(words(JANET)) and span["ngram_item"]["question"] == JANET
    assert not other["contaminated"] and other["reason"] is None and other["cosine"] < 0.8


def test_thresholds_are_settings(tests):
    assert not Decontaminator(tests, cosine=0.99).check([PARAPHRASE])[0]["contaminated"]
    assert not Decontaminator(tests, ngram=30).check([SPAN])[0]["contaminated"]  # no 30-word span shared
    assert Decontaminator(tests, cosine=0.1).check([UNRELATED])[0]["reason"] == "cosine"
    with pytest.raises(InputError):
        Decontaminator(tests, cosine=0)


def test_every_test_set_of_the_data_root_is_checked(data_dir, tests):
    sources = {p.source for p in tests}
    assert {"gsm8k", "svamp", "asdiv", "multiarith", "addsub", "singleeq", "singleop", "gsm_hard", "math500"} <= sources
    dc = Decontaminator.from_data_root(data_dir)
    svamp = next(p for p in dc.tests if p.source == "svamp")
    para, svamp_copy, other = dc.check([PARAPHRASE, svamp.question, UNRELATED])
    assert para["contaminated"] and para["nearest"]["dataset"] in ("gsm8k", "gsm_hard")
    assert svamp_copy["contaminated"] and svamp_copy["cosine"] == pytest.approx(1.0, abs=1e-3)
    assert not other["contaminated"]


def test_no_data_root_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no test set"):
        load_test_sets(tmp_path)


def test_histogram_and_figure(tmp_path):
    assert [h["count"] for h in histogram([0.0, 0.05, 0.55, 1.0], bins=10)] == [2, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    out = plot_similarity({"seeds": list(np.linspace(0, 0.7, 20)), "new": [0.2, 0.9]}, 0.8, tmp_path / "leak.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
