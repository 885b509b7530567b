"""The loop stop: which token sequences count as a loop, and a real generation cut short by it."""

from __future__ import annotations

import pytest

from mathdistill.student.generate import ends_in_loop


def test_ends_in_loop_needs_three_back_to_back_repeats_over_the_minimum_span():
    block = list(range(20))  # a 20-token block: 3 repeats = 60 tokens >= 48
    assert ends_in_loop([7, 8] + block * 3)
    assert not ends_in_loop([7, 8] + block * 2)  # two repeats are not a loop
    assert not ends_in_loop(block * 3 + [99])  # the repeats must end the sequence
    assert ends_in_loop([5] * 48) and not ends_in_loop([5] * 47)  # a short period needs the minimum span
    assert ends_in_loop(list(range(10)) * 5)  # 10-token block: 3 repeats are only 30 < 48 tokens, 5 are 50
    assert not ends_in_loop(list(range(10)) * 4)
    assert not ends_in_loop(list(range(200)))  # no repetition at all
    assert not ends_in_loop(list(range(70)) * 3)  # blocks longer than max_period are not looked for
    assert ends_in_loop(list(range(70)) * 3, max_period=70)


@pytest.mark.slow
def test_loop_stop_cuts_a_repeating_completion_and_keeps_the_others(student):
    from mathdistill.student.chat import render_prompt
    from mathdistill.student.generate import generate

    model, tok = student
    prompts = [render_prompt(tok, "Write the word 'apple' 200 times, separated by spaces."),
               render_prompt(tok, "What is 2 + 3? Answer in one short sentence.")]
    full = generate(model, tok, prompts, max_new_tokens=120, batch_size=2, progress=False)
    cut = generate(model, tok, prompts, max_new_tokens=120, batch_size=2, progress=False, loop_stop=True)
    # the repeating completion ends early, flagged, and is a prefix of the full one
    assert full[0].num_tokens[0] == 120 and not full[0].looped[0]
    assert cut[0].looped[0] and cut[0].num_tokens[0] < 120
    assert full[0].text.startswith(cut[0].text)
    # the ordinary completion is untouched
    assert cut[1].text == full[1].text and not cut[1].looped[0]
