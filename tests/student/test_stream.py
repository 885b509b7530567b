"""Streaming as an option of generation (`generate(stream={i: on_text})`): the pieces of a streamed completion
join to exactly its text (stop strings cut, a possible stop prefix held back, partial characters waited for), on
both paths (the slot engine and the batches), greedy and sampled, and the streamed prompt's text is the one the
same call gives without streaming."""

from __future__ import annotations

import pytest

from mathdistill.io import InputError
from mathdistill.student.generation import TextStream


class Chars:
    """A tokenizer whose token i is the character chr(i); 0xFFFD stands for half of a character."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(map(chr, ids))


def ids(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_pieces_join_to_the_text_cut_at_the_stop_string():
    pieces = []
    stream = TextStream(Chars(), pieces.append, stop=["\nQ:", "###"])
    for part in ("The answer", " is 1", "8.\n", "Q", ": next", " question"):
        stream.add(ids(part))
        assert not any(s in "".join(pieces) for s in ("\n", "#"))  # a stop string's start is held back
    stream.close("The answer is 18.")
    assert "".join(pieces) == "The answer is 18." and len(pieces) > 2


def test_text_goes_out_as_it_comes_without_stop_strings_and_waits_for_whole_characters():
    pieces = []
    stream = TextStream(Chars(), pieces.append)
    stream.add(ids("12 "))
    stream.add([0xFFFD])  # half a character: nothing until it is whole
    assert pieces == ["12 "]
    stream.add(ids("x"))
    stream.close("12 \ufffdx")
    assert "".join(pieces) == "12 \ufffdx"


def test_a_stream_for_no_prompt_is_refused():
    from mathdistill.student.generate import generate

    with pytest.raises(InputError, match="stream: 2 is not the index"):
        generate(None, None, ["a", "b"], stream={2: print})


@pytest.mark.slow
@pytest.mark.parametrize("slots", [True, False])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_streamed_pieces_join_to_the_text_of_the_plain_call(student, slots, temperature):
    from mathdistill.student.chat import render_prompt
    from mathdistill.student.generate import generate

    model, tok = student
    prompts = [render_prompt(tok, q) for q in ("What is 12 * 3?", "List three colours.", "What is 7 + 8?")]
    kw = dict(max_new_tokens=40, temperature=temperature, top_p=0.9, seeds=[1, 2, 3], stop=["\n2."], batch_size=2,
              progress=False, slots=slots)  # prompt 1 writes "1. Red: ...\n2. Blue: ...": cut at its second line
    pieces: list[str] = []
    streamed = generate(model, tok, prompts, stream={1: pieces.append}, **kw)
    plain = generate(model, tok, prompts, **kw)
    assert streamed == plain
    assert len(pieces) > 1 and "".join(pieces) == plain[1].text and plain[1].text.startswith("1. ")
    assert plain[1].num_tokens[0] < 40 and "\n" not in plain[1].text  # it stopped at "\n2.", held back and cut
