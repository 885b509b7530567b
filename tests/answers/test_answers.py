"""Answer extraction and equivalence: the evaluator's judge, so every case here is a real trap."""

import pytest

from mathdistill.answers import extract_answer, format_number, is_equivalent, normalize_answer, parse_number

EXTRACT = [
    # explicit final-answer phrases
    ("The answer is 18", "18"),
    ("The answer is 18.", "18"),
    ("So the final answer is: 42", "42"),
    ("Therefore, the answer is $1,000.00.", "1000"),
    ("the answer is 5 + 3 = 8", "8"),
    ("The answer is 18 apples.", "18"),
    ("The answer is -7.", "-7"),
    ("The answer is 0.5 of the pie", "0.5"),
    ("The answer is 3/4", "0.75"),
    ("The answer is 7.  Next, we check 9.", "7"),
    ("Answer: 12", "12"),
    ("Answer = 12.5%", "12.5"),
    ("First 3 + 4 = 7. The answer is 7. Then 100 more words with 99.", "7"),
    # GSM8K style
    ("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72", "72"),
    ("#### 1,234", "1234"),
    ("#### -3", "-3"),
    # A: at line start
    ("Q: what?\nA: 18", "18"),
    ("Q: what?\nA: $25", "25"),
    # boxed wins over everything, last boxed wins
    ("we get \\boxed{18}", "18"),
    ("\\boxed{3} is wrong, so \\boxed{4}", "4"),
    ("The answer is 5 but \\boxed{6}", "6"),
    ("\\boxed{\\frac{14}{3}}", "14/3"),
    ("\\boxed{\\frac{1}{2}}", "0.5"),
    ("\\boxed{\\dfrac{3}{8}}", "0.375"),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("\\boxed{x^{2}+1}", "x^{2}+1"),
    ("\\boxed{\\text{Evelyn}}", "\\text{Evelyn}"),
    ("\\boxed{10\\%}", "10"),
    ("\\boxed{90^\\circ}", "90"),
    ("\\boxed{\\$5.25}", "5.25"),
    # last number fallback
    ("She has 3 apples and buys 4 more, so 7", "7"),
    ("She pays $1,000.00 in total", "1000"),
    ("1, 2, 3", "3"),
    ("Total: 2,500 dollars", "2500"),
    ("it costs .5 dollars", "0.5"),
    ("The temperature is -12 degrees", "-12"),
    # nothing to extract
    ("", None),
    (None, None),
    ("no numbers here", None),
]


@pytest.mark.parametrize("text,expected", EXTRACT)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


EQUIV = [
    ("1,000", "1000", True),
    ("$5", "5", True),
    ("5.00", "5", True),
    ("5 apples", "5", True),
    ("5", "5.0", True),
    ("51.0", "51", True),
    ("1/2", "0.5", True),
    ("\\frac{1}{2}", "0.5", True),
    ("14/3", "\\frac{14}{3}", True),
    ("4.666667", "14/3", False),  # a fraction gold wants its exact value (1e-9 relative)
    ("-3", "-3.0", True),
    ("0.333", "1/3", False),  # a rounding is not the exact value of a fraction gold
    ("6", "5", False),
    ("-5", "5", False),
    ("1000", "100", False),
    ("50%", "50", True),
    ("\\frac{\\pi}{2}", "\\dfrac{\\pi}{2}", True),
    ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("\\sqrt{51}", "\\sqrt{51}", True),
    ("2\\sqrt{13}", "3\\sqrt{13}", False),
    ("6-5i", "6 - 5i", True),
    ("p-q", "p - q", True),
    ("Evelyn", "\\text{Evelyn}", True),
    ("x^2+1", "1+x^2", True),
    ("Yes", "yes", True),
    ("Purple", "Green", False),
    (None, "5", False),
    ("5", None, False),
    ("", "5", False),
]


@pytest.mark.parametrize("pred,gold,expected", EQUIV)
def test_is_equivalent(pred, gold, expected):
    assert is_equivalent(pred, gold) is expected


@pytest.mark.parametrize(
    "raw,expected",
    [
        (51.0, "51"),
        (1234.5, "1234.5"),
        (12.333333333333334, "37/3"),
        ("  $1,000 ", "1000"),
        ("9 (apples)", "9 (apples)"),  # units in parentheses are the ASDiv loader's job
        ("\\frac{14}{3}", "14/3"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("", None),
        (None, None),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_parse_number_rejects_expressions():
    assert parse_number("x = 5") is None
    assert parse_number("3 + 4") is None
    assert parse_number("\\sqrt{2}") is None
    assert parse_number("1/0") is None


def test_format_number():
    assert format_number(5.0) == "5"
    assert format_number(0.1 + 0.2) == "0.3"
    assert format_number(-2.5) == "-2.5"
