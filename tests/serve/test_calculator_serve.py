"""`mathdistill serve --calculator` (issue 16): the flag reaches every generation of the server
(batched and streamed) and each reply says how many values were forced; off, nothing changes."""

from __future__ import annotations

import openai
import pytest
from serve_helpers import ScriptedBatcher, scripted_engine

from mathdistill.serve import Context, Defaults, Engine, Options, family
from mathdistill.serve.app import create_app

Q = "Tom has 3 apples and buys 4 more. How many apples does he have?"
SCRIPT = {Q: {"cot": "3 + 4 = 7 apples.\nThe answer is 7."}}


class Forcing(ScriptedBatcher):
    """A scripted batcher whose completions report `n` calculator interventions when asked for them."""

    n = 2

    def submit(self, prompts, settings, seeds=None, on_text=None):
        fut = super().submit(prompts, settings, seeds, on_text)
        if settings.get("calculator"):
            for g in fut.result():
                g.interventions = [self.n] * len(g.texts)
        return fut


def served(live, tokenizer, calculator: bool):
    from dataclasses import replace

    engine = scripted_engine(tokenizer, SCRIPT)
    engine.batcher = Forcing(SCRIPT)
    engine.defaults = replace(engine.defaults, calculator=calculator)
    srv = live(create_app(engine, family("cot", ["cot"], vote=False)))
    return srv, engine


def ask(srv, **kw):
    c = openai.OpenAI(base_url=srv.url, api_key="none", max_retries=0)
    return c.chat.completions.create(model="cot", messages=[{"role": "user", "content": Q}], **kw)


def test_on_reaches_generation_and_is_reported(live, tokenizer):
    srv, engine = served(live, tokenizer, calculator=True)
    r = ask(srv)
    assert engine.batcher.calls[-1][1]["calculator"] is True
    assert r.choices[0].model_extra["mathdistill"]["calculator_interventions"] == Forcing.n
    assert r.usage.model_extra["calculator_interventions"] == Forcing.n
    assert r.choices[0].message.content == SCRIPT[Q]["cot"]
    chunks = list(ask(srv, stream=True, stream_options={"include_usage": True}))
    assert engine.batcher.calls[-1][1]["calculator"] is True  # the streamed path too
    last = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    assert last.choices[0].model_extra["mathdistill"]["calculator_interventions"] == Forcing.n
    assert chunks[-1].usage.model_extra["calculator_interventions"] == Forcing.n


def test_off_sends_what_it_always_sent(live, tokenizer):
    srv, engine = served(live, tokenizer, calculator=False)
    r = ask(srv)
    assert "calculator" not in engine.batcher.calls[-1][1]
    assert "calculator_interventions" not in r.choices[0].model_extra["mathdistill"]
    assert r.usage.model_dump(exclude_none=True).keys() == {"prompt_tokens", "completion_tokens", "total_tokens"}


def test_a_calc_name_turns_it_on_for_its_own_requests_only(live, tokenizer):
    """A run evaluated with `eval.calculator` serves `<name>+calc` (`Calculated`): that name's requests
    generate with calculator decoding and report it; the plain name's do not (the server's flag is off)."""
    from mathdistill.serve import Calculated

    engine = scripted_engine(tokenizer, SCRIPT)
    engine.batcher = Forcing(SCRIPT)
    plain = family("cot", ["cot"], vote=False)
    srv = live(create_app(engine, plain | {"cot+calc": Calculated(plain["cot"])}))
    c = openai.OpenAI(base_url=srv.url, api_key="none", max_retries=0)
    assert [m.id for m in c.models.list()] == ["cot", "cot+calc"]
    for stream in (False, True):
        for name, on in (("cot+calc", True), ("cot", False), ("cot+calc", True)):
            kw = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
            r = c.chat.completions.create(model=name, messages=[{"role": "user", "content": Q}], **kw)
            chunks = list(r) if stream else [r]
            last = [x for x in chunks if x.choices and x.choices[0].finish_reason][-1]
            usage = chunks[-1].usage
            assert engine.batcher.calls[-1][1].get("calculator", False) is on, (name, stream)
            want = Forcing.n if on else None
            assert last.choices[0].model_extra["mathdistill"].get("calculator_interventions") == want
            assert (usage.model_extra or {}).get("calculator_interventions") == want


def test_the_flag_reaches_the_engines_defaults(monkeypatch):
    """`serve --model M --calculator` loads the engine with calculator decoding on (off without the flag)."""
    from typer.testing import CliRunner

    import mathdistill.serve as serve_pkg
    from mathdistill.cli import app

    seen = []

    class Loaded(Exception):
        pass

    def fake_load(served, model, defaults, **kw):
        seen.append(defaults)
        raise Loaded

    monkeypatch.setattr(serve_pkg, "load_engine", fake_load)
    for flags, want in ((["--calculator"], True), ([], False)):
        r = CliRunner().invoke(app, ["serve", "--model", "smollm2-135m", "--port", "0", *flags])
        assert isinstance(r.exception, Loaded), r.output
        assert seen[-1].calculator is want


SHOTS = "Q: What is 3 * 4?\nA: 3 * 4 = 12.\n\nQ: What is 25 + 17?\nA: 25 + 17 = 42.\n\n"
PROMPT = f"{SHOTS}Q: What is 17 * 23?\nA:"


@pytest.mark.slow
def test_real_student_gets_the_forced_value_batched_and_streamed(student):
    """The default student through the server's own batcher: with calculator decoding its `17 * 23 =`
    is followed by the computed 391, batched and streamed alike, and the request counts it."""
    from mathdistill.serve.batching import Batcher

    model, tok = student
    batcher = Batcher(model, tok, batch_size=4, wait=0.0)
    try:
        texts = {}
        for on in (False, True):
            engine = Engine(model, tok, batcher, Defaults(max_new_tokens=16, loop_stop=False, calculator=on))
            ctx = Context(engine, Options(stop=("\n",)))
            texts[on] = ctx.generate([PROMPT])[0].text
            assert ctx.interventions == (1 if on else 0)
            pieces = []
            streamed = Context(engine, Options(stop=("\n",)), on_text=pieces.append)
            gen = streamed.generate([PROMPT])[0]
            assert gen.text == texts[on] and "".join(pieces).startswith(gen.text)
            assert streamed.interventions == ctx.interventions
        assert texts[True].lstrip().startswith("17 * 23 = 391"), texts
        assert not texts[False].lstrip().startswith("17 * 23 = 391"), "the student does not slip here: shows nothing"
    finally:
        batcher.close()
