"""The answer-equivalence rule (see the docstring of mathdistill.answers), case by case.

Every row is (prediction, gold, equal?, why). More than half are near misses that must stay
unequal: a loose checker inflates every accuracy the project reports.
"""

import json
from fractions import Fraction

import pytest

from mathdistill.answers import format_number, is_equivalent, normalize_answer, parse_number, vote

TABLE = [
    # --- integer gold: |p - g| <= 1e-9 * max(1, |g|), and two whole numbers only when identical
    ("17.999999999999996", "18", True, "PoT float noise on an integer gold"),
    ("18.000000000000004", "18", True, "float noise above the integer"),
    ("18.0", "18", True, "trailing zeros are no difference"),
    ("109844510400.00002", "109844510400", True, "float noise on GSM-Hard's largest integers"),
    ("$1,234,567", "1234567", True, "currency and thousands separators"),
    ("123460", "123456", False, "GSM-Hard integer off by 4 (the old 1e-4 tolerance said equal)"),
    ("1000001", "1000000", False, "off by one at a million"),
    ("99999", "100000", False, "off by one below a power of ten"),
    ("1000000001", "1000000000", False, "two whole numbers differ even where 1e-9*|g| >= 1"),
    ("6277334005", "6277334000", False, "GSM-Hard gold above 1e9, prediction off by 5"),
    ("109844510500", "109844510400", False, "GSM-Hard's largest integers, off by 100"),
    ("18.0001", "18", False, "beyond float noise"),
    ("12.000001", "12", False, "a millionth is not float noise"),
    ("17.5", "18", False, "an integer gold is not rounded to"),
    ("-18", "18", False, "sign"),
    ("50", "500", False, "a dropped zero"),
    ("3.5", "35", False, "a misplaced decimal point"),
    ("3", "3.5", False, "whole prediction of a decimal gold"),
    # --- decimal gold: round the prediction to the gold's decimal places (half away from zero)
    ("0.333", "0.33", True, "rounds to the gold's two places"),
    ("1/3", "0.33", True, "an exact fraction rounds to the gold's places"),
    ("3.50", "3.5", True, "trailing zero"),
    ("7/2", "3.5", True, "fraction of a decimal gold"),
    ("2.4999999999999996", "2.5", True, "float noise on a decimal gold"),
    ("-0.335", "-0.34", True, "half away from zero, negative"),
    ("0.4615384615", "0.46", True, "an ASDiv ratio written with more places"),
    ("0.34", "0.33", False, "wrong in the last place"),
    ("0.3", "0.33", False, "fewer places than the gold"),
    ("0.335", "0.33", False, "half rounds away from zero, to 0.34"),
    ("3.5", "3.49", False, "3.5 rounds to 3.50"),
    ("3.4", "3.5", False, "wrong in the only place"),
    ("2/3", "0.66", False, "2/3 rounds to 0.67"),
    ("5.4", "5.04", False, "a dropped zero after the point"),
    ("-0.5", "0.5", False, "sign"),
    ("0.0017", "0.0016791648", False, "two significant digits of a ten-digit gold"),
    # --- a gold written as a float repr is read to 10 significant digits (its normalised form)
    ("14053029.67", "14053029.666666666", True, "rounded to the gold's 10 significant digits"),
    ("42159089/3", "14053029.666666666", True, "the exact value of a float-repr gold"),
    ("14053029.666666668", "14053029.666666666", True, "the same value computed in another order"),
    ("14053029.7", "14053029.666666666", False, "one decimal is not 10 significant digits"),
    ("14053029.65", "14053029.666666666", False, "wrong in the second decimal"),
    # --- fraction gold: the exact value (float noise only, 1e-9 relative)
    ("2/4", "1/2", True, "equal fractions"),
    ("0.5", "1/2", True, "a terminating fraction equals its decimal"),
    ("\\frac{2}{6}", "1/3", True, "LaTeX fraction, by value"),
    ("-0.5", "-1/2", True, "negative fraction"),
    ("0.3333333333333333", "1/3", True, "PoT's float of 1/3"),
    ("388147.4117647059", "6598506/17", True, "PoT's float of a GSM-Hard fraction gold"),
    ("0.34", "1/3", False, "not the exact value"),
    ("0.33", "1/3", False, "a rounding is not the exact value of a fraction gold"),
    ("0.3333", "1/3", False, "four places are not the exact value"),
    ("4.666667", "14/3", False, "seven significant digits are not the exact value"),
    ("1/2", "1/3", False, "different fractions"),
    ("0.67", "2/3", False, "a rounding of 2/3"),
    ("388147.41", "6598506/17", False, "two decimals of a GSM-Hard fraction gold"),
    # --- percentages: the % sign is a unit, "50%" is the number 50
    ("50%", "50", True, "a prediction with a percent sign"),
    ("50", "50%", True, "a gold with a percent sign"),
    ("12.5 percent", "12.5", True, "percent in words"),
    ("0.5", "50%", False, "a percentage is not its fraction of one"),
    ("50%", "0.5", False, "a percentage is not its fraction of one, the other way"),
    ("5%", "50", False, "a different percentage"),
    # --- LaTeX and expressions still go through math-verify
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True, "symbolic equality"),
    ("\\sqrt{2}", "\\sqrt{3}", False, "different roots"),
    ("2\\pi", "\\pi", False, "a factor of two"),
]


@pytest.mark.parametrize("pred,gold,expected,why", TABLE, ids=[f"{p} vs {g}" for p, g, _, _ in TABLE])
def test_equivalence_table(pred, gold, expected, why):
    assert is_equivalent(pred, gold) is expected, why


def test_table_is_mostly_near_misses():
    unequal = [row for row in TABLE if not row[2]]
    assert len(TABLE) >= 30 and len(unequal) * 2 >= len(TABLE)


@pytest.mark.parametrize("pred,gold,expected,why", TABLE, ids=[f"{p} vs {g}" for p, g, _, _ in TABLE])
def test_normalised_gold_means_the_same(pred, gold, expected, why):
    # the loaders store normalize_answer(gold): a gold must mean the same before and after
    assert is_equivalent(pred, normalize_answer(gold)) is expected, why


@pytest.mark.parametrize(
    "raw,text",
    [
        (4795436.8, "4795436.8"),  # not the float noise 4795436795204563/999999999
        (9284017268534.4, "9284017268534.4"),  # not the binary expansion ...534.400390625
        (388147.4117647059, "6598506/17"),
        (14053029.666666666, "42159089/3"),
        (3244047.0999999996, "3244047.1"),
        (2.0107e-06, "0.0000020107"),
        (17.999999999999996, "18"),
    ],
)
def test_float_golds_normalise_to_their_value(raw, text):
    assert format_number(raw) == text


def test_vote_groups_only_equal_values():
    # near misses are separate votes (the old tolerance merged 123460 with 123456)
    assert vote({"cot": ["123460"], "pot": ["123456"], "eot": ["123456"]}, ["cot", "pot", "eot"]) == ("123456", "pot")
    # a rounding and the value it rounds are different answers, whichever comes first
    assert vote({"a": ["0.33"], "b": ["0.333"], "c": ["0.333"]}, ["a", "b", "c"]) == ("0.333", "b")
    assert vote({"a": ["0.33"], "b": ["1/3"], "c": ["1/3"]}, ["a", "b", "c"]) == ("1/3", "b")
    # equal values are one vote: percent sign, fraction and decimal, float noise
    assert vote({"a": ["50%"], "b": ["50"], "c": ["0.5"]}, ["c", "a", "b"]) == ("50%", "a")
    assert vote({"a": ["1/2"], "b": ["0.5"], "c": ["0.4"]}, ["c", "a", "b"]) == ("1/2", "a")
    assert vote({"a": ["17.999999999999996"], "b": ["18"], "c": ["17"]}, ["c", "b", "a"])[1] == "b"


def _raw_golds(data_dir):
    for name in ("gsm_hard/test.jsonl", "mawps/addsub.jsonl", "mawps/singleeq.jsonl", "mawps/singleop.jsonl"):
        for line in (data_dir / name).read_text().splitlines():
            yield json.loads(line)["target"]


def test_every_numeric_gold_of_the_data_accepts_its_own_value(data_dir):
    # every float gold the loaders read (GSM-Hard, MAWPS) equals the float itself, its repr (parse_number
    # reads no exponents) and its normalised text, and never its value plus one in the last written place
    for raw in _raw_golds(data_dir):
        gold = normalize_answer(raw)
        assert parse_number(gold) is not None, raw
        for pred in (raw, gold) + (() if "e" in repr(raw) else (repr(raw),)):
            assert is_equivalent(pred, gold), (pred, gold)
        places = len(gold.split(".")[1]) if "." in gold else 0
        off_by_one = parse_number(gold) + Fraction(1, 10**places)
        assert not is_equivalent(str(off_by_one), gold), gold
