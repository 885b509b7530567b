"""The EoT solver: syntax, systems with unknowns, and clear errors."""

from __future__ import annotations

import pytest

from mathdistill import thoughts
from mathdistill.thoughts.eot_solver import EoTError, solve_text


@pytest.mark.parametrize("text,value", [
    ("a = 48\nb = a / 2\nans = a + b", "72"),
    ("ans = a + b\nb = a / 2\na = 48", "72"),  # any order
    ("% comment line\nx = 3 # trailing comment\nans = x^2 % squared", "9"),
    ("2x + 3 = 11\nans = x", "4"),
    ("x + y = 10\nx - y = 2\nans = x * y", "24"),
    ("price = $1,200\nans = price / 4", "300"),
    ("jayden + 3 = (ernesto + 3) / 2\nernesto = 11\nans = jayden", "4"),
    ("a = b = 7\nans = a + b", "14"),
    ("```\nx = 1/3\nans = 3x\n```\nSo the answer is 1.", "1"),
    ("ans = 10 / 4", "2.5"),
    ("ans = 1 / 3", "1/3"),
    ("ans * 4 = 10", "2.5"),
    ("Equation 1: x + 1 = 3\nAnswer: ans = x", "2"),
    ("a = 4\nSo she eats 4 * 3 = 12 eggs.\nans = 3a\nSo the answer is ans = 12.", "12"),  # chatter skipped
    ("ans = sqrt(16) + max(2, 3)", "7"),
    ("x ** 2 = 49\nx = 7\nans = x", "7"),  # the second equation picks the root
    ("x = 5\nx = 5\nans = x", "5"),  # a repeated, consistent definition is fine
])
def test_solves(text, value):
    assert solve_text(text) == value


@pytest.mark.parametrize("text,message", [
    ("x = 1\nx = 2\nans = x", "inconsistent"),
    ("x + y = 1\nx + y = 2\nans = x", "no solution|inconsistent"),
    ("x ** 2 = 4\nans = x", "several values"),
    ("ans = y + 1", "not determined"),
    ("x = 5", "no `ans`"),
    ("The answer is five.", "no equations"),
    ("ans = 2 +", "line 1: cannot parse"),
    ("ans = __import__('os').system('touch /tmp/x')", "cannot parse"),
    ("ans = (lambda: 3)()", "cannot parse"),
    ("ans = 2 ** 100000", "exponent too large"),
    ("x < 3 = 2\nans = 1", "cannot parse|inequalit"),
])
def test_errors(text, message):
    import re

    with pytest.raises(EoTError) as e:
        solve_text(text)
    assert re.search(message, str(e.value)), str(e.value)


def test_eot_thought_runs_in_sandbox():
    eot = thoughts.get("eot")
    out = eot.score_batch(["a = 2\nans = 3a", "x = 1\nx = 2\nans = x", ""], ["6", "1", "1"])
    assert out[0].correct and out[0].prediction == "6"
    assert not out[1].correct and "inconsistent" in out[1].error
    assert out[2].error == "empty"
