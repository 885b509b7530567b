"""Calculator decoding: the detector/evaluator on a table of texts (what is forced after each,
or None: no intervention), number formatting, guards against hostile input, and the generation
hook (`batch_hooks.CalculatorHook`) on scripted token streams (no model)."""

from __future__ import annotations

import time
import types
from fractions import Fraction

import pytest

from mathdistill.student.calculator import calculation, evaluate, format_number

HUGE = "7" * 10_000

CASES = [  # text the student has written -> the text forced next (None: left alone)
    # the examples
    ("16 * 0.60 =", " 9.6"),
    ("$1,200 / 4 =", " 300"),
    ("25% of 80 =", " 20"),
    ("((2 + 3) * (4 - 1)) / 5 =", " 3"),
    ("(((1 + 2) * 3) - (4 / (2 + 2))) =", " 8"),
    ("9**9**9 =", None),
    (HUGE + " =", None),
    (HUGE + " + 1 =", None),
    ("1 + " + HUGE + " =", None),
    ("1/0 =", None),
    ("5 / (3 - 3) =", None),
    # operators and spellings
    ("2 + 3 =", " 5"),
    ("10 - 4 =", " 6"),
    ("6 × 7 =", " 42"),
    ("84 ÷ 2 =", " 42"),
    ("3 x 4 =", " 12"),
    ("9 − 11 =", " -2"),
    ("-5 + 3 =", " -2"),
    ("2 * -3 =", " -6"),
    ("<<48/2=", "24"),
    ("<<1,000*3=", "3000"),
    ("48/2=", "24"),
    ("(3+4)=", "7"),
    ("$5 * 3 =", " 15"),
    ("$2.50 * 4 =", " 10"),
    (".5 * 8 =", " 4"),
    ("80 * 25% =", " 20"),
    ("50% of $300 =", " 150"),
    # formatting: integers without .0, <= 4 decimals, trailing zeros dropped, no separators
    ("10 / 4 =", " 2.5"),
    ("10 / 3 =", " 3.3333"),
    ("2 / 3 =", " 0.6667"),
    ("0.1 + 0.2 =", " 0.3"),
    ("1.50 * 2 =", " 3"),
    ("1,000 * 1,000 =", " 1000000"),
    ("0.00001 * 10 =", " 0.0001"),
    # where the expression starts
    ("She has 5 apples. 5 + 3 =", " 8"),
    ("In 2020, 5 + 3 =", " 8"),
    ("So 2 * 3 = 6 and 6 + 4 =", " 10"),
    ("Let x = 5 * 2 =", " 10"),
    ("so (5 + 3 =", " 8"),
    ("Step 1:12*2=", "24"),
    ("half of 3 + 4 =", " 7"),
    # not plain arithmetic: left alone
    ("2 =", None),
    ("$40 =", None),
    ("25% =", None),
    ("80 + 10% =", None),
    ("3 of 4 =", None),
    ("the answer =", None),
    ("x =", None),
    ("2^3 + 4 =", None),
    ("2**3 =", None),
    ("v2 + 3 =", None),
    ("f(5 + 3 =", None),
    ("3x + 4 =", None),
    ("3x - 4 =", None),
    ("2 * +3 =", None),
    ("max 5 * 2 =", " 10"),
    ("1,200,5 + 3 =", None),
    ("5 >=", None),
    ("5 + 3 ==", None),
    ("5 + 3 <=", None),
    ("5 + 3", None),
    ("5 + 3 = 8", None),
    ("(5 + 3)) =", None),
    ("5 + * 3 =", None),
    ("0.00001 * 1 =", None),  # rounds to 0 without being 0
    ("10 ** 20 =", None),
    ("1000000 * 1000000 * 1000 =", None),  # >= 10**15
    ("(" * 40 + "1" + ")" * 40 + " + 1 =", None),  # nested too deep
    (" + ".join(["1"] * 100) + " =", None),  # too many tokens
]


@pytest.mark.parametrize("text,forced", CASES, ids=[c[0][:30] for c in CASES])
def test_calculation_table(text, forced):
    assert calculation(text) == forced


def test_table_is_large_enough():
    assert len(CASES) >= 40
    assert sum(f is None for _, f in CASES) >= 15 and sum(f is not None for _, f in CASES) >= 25


@pytest.mark.parametrize("expr,value", [
    ("16 * 0.60", Fraction(48, 5)), ("$1,200 / 4", Fraction(300)), ("25% of 80", Fraction(20)),
    ("1/3 + 1/3 + 1/3", Fraction(1)), ("(2+3)*(4+5)", Fraction(45)),
])
def test_evaluate_is_exact(expr, value):
    assert evaluate(expr) == value


@pytest.mark.parametrize("expr", ["hello", "2 +", "the 5 + 3", "1/0", "9**9**9", HUGE + " * 2", "", "5"])
def test_evaluate_refuses(expr):
    assert evaluate(expr) is None


@pytest.mark.parametrize("value,text", [
    (Fraction(24), "24"), (Fraction(-24), "-24"), (Fraction(0), "0"), (Fraction(48, 5), "9.6"),
    (Fraction(1, 3), "0.3333"), (Fraction(2, 3), "0.6667"), (Fraction(1, 8), "0.125"),
    (Fraction(100005, 100000), "1.0001"), (Fraction(-1, 2), "-0.5"), (Fraction(123456789), "123456789"),
    (Fraction(199999, 100000), "2"),
])
def test_format_number(value, text):
    assert format_number(value) == text


def test_a_cut_off_tail_does_not_start_an_expression():
    assert calculation("23 + 4 =", at_start=False) is None  # could be "123 + 4 ="
    assert calculation(" 23 + 4 =", at_start=False) is None  # could be "1 + 23 + 4 =": the token before was cut
    assert calculation(" 23 + 4 =") == " 27"  # the whole generation: it starts there
    assert calculation("abc 23 + 4 =", at_start=False) == " 27"


def test_hostile_inputs_are_cheap():
    """Bounded cost: each of these is answered (None) in well under a second."""
    for text in ["9**9**9 =", HUGE + " =", HUGE + " * " + HUGE + " =", "(" * 5000 + "1 =",
                 "1" + ",000" * 3000 + " + 1 =", " " * 20000 + "1 + 1 =x", "1 * " * 3000 + "1 ="]:
        t0 = time.perf_counter()
        assert calculation(text) is None or len(text) < 100
        assert time.perf_counter() - t0 < 1.0, text[:40]


# --- the generation hook, on scripted token streams ------------------------------------------

@pytest.fixture(scope="module")
def tok(student_path):
    from mathdistill.models import load_tokenizer

    return load_tokenizer(student_path)


def run_hook(tok, rows, steps, done=None, state=None, free=" ok"):
    """Drive `CalculatorHook` like greedy decoding would: each row has a prompt and what it
    generated so far; the model "wants" `free` every step (a list: `free[i]` at step i; a text's first
    token, or a token id), else " ok";
    returns the rows' texts and the state."""
    import torch

    from mathdistill.student.calculator import Calculator
    from mathdistill.student.batch_hooks import CalculatorHook

    prompt = tok.encode("Question: what is it? Answer:")
    gen = [tok.encode(t, add_special_tokens=False) for t in rows]
    width = len(prompt) + max(len(g) for g in gen)
    pad = tok.pad_token_id
    ids = torch.tensor([[pad] * (width - len(prompt) - len(g)) + prompt + g for g in gen])
    gen_start = [width - len(g) for g in gen]
    done = done or [None] * len(rows)
    state = state if state is not None else [[[], 0] for _ in rows]
    finish = types.SimpleNamespace(finished=torch.tensor([d is not None for d in done]))  # as `Finish` has it
    calc = Calculator(tok)
    hook = CalculatorHook(calc, gen_start, state, finish)
    ok = tok.encode(" ok", add_special_tokens=False)[0]
    digits = set(calc.continuations)
    for i in range(steps):
        want = free if isinstance(free, str) else free[i]
        want = want if isinstance(want, int) else tok.encode(want, add_special_tokens=False)[0]
        scores = torch.zeros(len(rows), len(tok))
        scores[:, ok] = 0.5
        scores[:, want] = 1.0
        before = scores.clone()
        out = hook(ids, scores)
        for r in range(len(rows)):  # untouched unless forced (one token left) or kept from extending a value
            changed = set((out[r] != before[r]).nonzero()[:, 0].tolist())
            assert not changed or int((out[r] > float("-inf")).sum()) == 1 or changed <= digits
        ids = torch.cat([ids, out.argmax(-1, keepdim=True)], 1)
    texts = [tok.decode(ids[r, gen_start[r]:]) for r in range(len(rows))]
    return texts, state


def test_hook_forces_the_value_in_its_row_only(tok):
    rows = ["So 16 * 0.60 =", "He has 2 dogs =", "Then <<48/2=", "Tom has 4 apples and", "3 + 4 ="]
    texts, state = run_hook(tok, rows, 6, done=[None, None, None, None, 3])
    assert texts[0] == "So 16 * 0.60 = 9.6 ok ok"
    assert texts[1] == "He has 2 dogs =" + " ok" * 6  # not arithmetic: left alone
    assert texts[2] == "Then <<48/2=24 ok ok ok ok"
    assert texts[3] == "Tom has 4 apples and" + " ok" * 6
    assert texts[4] == "3 + 4 =" + " ok" * 6  # finished rows are not touched
    assert [n for _, n in state] == [1, 0, 1, 0, 0]


def test_hook_triggers_again_on_each_new_step_and_survives_a_hand_over(tok):
    texts, state = run_hook(tok, ["12 * 3 ="], 2)  # forced " 3" so far; "6" still to come
    assert texts == ["12 * 3 = 3"] and state[0][1] == 1 and state[0][0]
    texts, state = run_hook(tok, texts, 2, state=state)  # the next batch goes on with the rest
    assert texts == ["12 * 3 = 36 ok"] and state == [[[], 1]]
    texts, state = run_hook(tok, ["12 * 3 = 36 and 36 - 1 ="], 4)
    assert texts == ["12 * 3 = 36 and 36 - 1 = 35 ok"] and state[0][1] == 1


def test_a_forced_value_is_not_extended_by_the_student(tok):
    """After the forced value, and after a "." or "," right behind it, no digit may follow: the student
    cannot turn the calculator's 25 into 250 or 4 into 4.5 (seen with the real student); other rows and
    later steps are free."""
    texts, _ = run_hook(tok, ["So 500 * 0.05 =", "It is 2.5"], 5, free="0")  # " 25" is 3 tokens
    assert texts == ["So 500 * 0.05 = 25 ok0", "It is 2.500000"]
    texts, _ = run_hook(tok, ["16/4 ="], 4, free=["0", "0", ".", "5"])
    assert texts == ["16/4 = 4. ok"]
    texts, _ = run_hook(tok, ["16/4 ="], 4, free=["0", "0", " and", "5"])
    assert texts == ["16/4 = 4 and5"]


@pytest.fixture(scope="module")
def sp_tok():
    """A small SentencePiece-style tokenizer (Metaspace: a word's tokens start with "▁", and a token
    decoded alone loses it), trained here, as Llama/Gemma-family students have."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    raw.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    corpus = ["Question: what is it? Answer: ok", "So 16/4 = 4. 5 more and 12 * 4 = 48, 48/2 = 24 ok"] * 20
    raw.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=150, special_tokens=["<unk>", "<pad>"]))
    return PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", pad_token="<pad>")


def test_a_sentencepiece_number_after_a_value_is_a_new_number(sp_tok):
    """"▁5" decodes alone as "5", but after other text it reads " 5": a new number, which may follow a
    forced value and its "."; a digit glued to the value may not (the calculator reads token texts as
    they read after other text, not decoded alone)."""
    from mathdistill.student.calculator import Calculator

    calc = Calculator(sp_tok)
    piece = sp_tok.convert_tokens_to_ids
    assert piece("▁5") not in calc.continuations and piece("5") in calc.continuations
    assert piece("▁=") in calc.triggers and piece(".") in calc.joins
    texts, state = run_hook(sp_tok, ["So 16/4 ="], 3, free=[piece("0"), piece("."), piece("▁5")])
    assert texts == ["So 16/4 = 4. 5"] and state[0][1] == 1
