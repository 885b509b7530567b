"""Serving LoRID (its consistency loop over three adapters), FDD (last finished round) and SIKeD (last
finished iteration, the student's own choice of strategy) with scripted completions (no model): the
roles' prompts, adapters and settings, the loop's answer and fields, and which run folders they load."""

from __future__ import annotations

import json
from concurrent.futures import Future
from types import SimpleNamespace

import openai
import pytest
from serve_helpers import ScriptedBatcher

from mathdistill.io import InputError
from mathdistill.serve import Context, Defaults, Engine
from mathdistill.methods.fdd import serve as serve_fdd
from mathdistill.methods.lorid import LoRID
from mathdistill.methods.siked import Chosen, serve as serve_siked

Q = "Tom has 3 apples and buys 4 more. How many apples does he have?"


class Roles(ScriptedBatcher):
    """Completions by adapter, in the order asked: `script[adapter]` is a list, one per call."""

    def submit(self, prompts, settings, seeds=None, on_text=None):
        from mathdistill.student.generate import Generation

        self.calls.append((list(prompts), dict(settings)))
        text = self.script[settings["adapter"]].pop(0)
        fut = Future()
        fut.set_result([Generation([text], [len(text.split())], [False])])
        return fut


def engine(tokenizer, script):
    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=2048))
    return Engine(model, tokenizer, Roles({k: list(v) for k, v in script.items()}), Defaults(max_new_tokens=64))


def loop_cfg(**kw):
    """A LoRID loop config; greedy-first unless `preset` says otherwise (the tests below script its calls)."""
    from mathdistill.methods.lorid import LoopConfig

    return LoopConfig(**{"max_iterations": 3, "preset": "greedy-first", **kw})


def test_the_lorid_loop_samples_until_ir_and_dr_agree(tokenizer):
    e = engine(tokenizer, {"ir": ["The answer is 7.", "The answer is 9."], "kg": ["Add the counts.", "Sum them."],
                           "dr": ["3 + 4 = 8. The answer is 8.", "3 + 4 = 7. The answer is 7."]})
    reply = LoRID(loop_cfg())(Context(e), Q)
    # iteration 1: IR 7, DR 8 (no agreement); iteration 2: IR 9, DR 7 -> DR agrees with IR's first answer
    assert reply.answer == "7" and reply.content == "3 + 4 = 7. The answer is 7."
    assert reply.info() == {"answer": "7", "format": "cot", "answers": {"ir": ["7", "9"], "dr": ["8", "7"]},
                            "iterations": 2, "resolved": True, "knowledge": "Sum them."}
    calls = e.batcher.calls
    assert [s["adapter"] for _, s in calls] == ["ir", "kg", "dr"] * 2  # the adapters are chosen per call
    assert [s["temperature"] for _, s in calls] == [0.0] * 3 + [0.7] * 3  # greedy first iteration, then sampled
    assert calls[1][1]["max_new_tokens"] == 128 and calls[0][1]["max_new_tokens"] == 64  # knowledge's own budget
    assert "[Knowledge] List the general knowledge" in calls[1][0][0]
    assert "Add the counts.\n[CoT] Think step by step" in calls[2][0][0]  # DR reads KG's knowledge
    assert "[CoT] Think step by step" in calls[0][0][0] and calls[0][0][0].startswith("<|im_start|>")


def test_an_unresolved_loop_gives_the_fallback_and_ir_s_first_rationale(tokenizer):
    e = engine(tokenizer, {"ir": ["The answer is 1.", "The answer is 2.", "The answer is 2."], "kg": ["k"] * 3,
                           "dr": ["The answer is 3.", "The answer is 4.", "no answer here"]})
    reply = LoRID(loop_cfg(fallback="majority"))(Context(e), Q)
    assert reply.answer == "2" and reply.content == "The answer is 1."  # majority of 1,3,2,4,2,None
    assert reply.extra["resolved"] is False and reply.extra["iterations"] == 3
    e = engine(tokenizer, {"ir": ["The answer is 1."], "kg": ["k"], "dr": ["The answer is 3."]})
    reply = LoRID(loop_cfg(fallback="abstain", max_iterations=1))(Context(e), Q)
    assert reply.answer is None and reply.extra["iterations"] == 1


def test_lorid_ir_and_dr_alone_are_greedy(tokenizer):
    e = engine(tokenizer, {"ir": ["The answer is 7."], "kg": ["Add."], "dr": ["The answer is 8."]})
    ir = LoRID(loop_cfg(), "ir")(Context(e), Q)
    dr = LoRID(loop_cfg(), "dr")(Context(e), Q)
    assert (ir.content, ir.answer, ir.answers) == ("The answer is 7.", "7", {"cot": "7"})
    assert (dr.content, dr.answer, dr.extra) == ("The answer is 8.", "8", {"knowledge": "Add."})
    assert [(s["adapter"], s["temperature"]) for _, s in e.batcher.calls] == [("ir", 0.0), ("kg", 0.0), ("dr", 0.0)]


def test_the_paper_preset_samples_every_iteration_and_counts_an_unresolved_problem_wrong(tokenizer):
    e = engine(tokenizer, {"ir": ["The answer is 1.", "The answer is 2."], "kg": ["k"] * 2,
                           "dr": ["The answer is 3.", "The answer is 4."]})
    reply = LoRID(loop_cfg(preset="paper", max_iterations=2))(Context(e), Q)
    assert reply.answer is None and reply.extra["resolved"] is False  # abstain: no answer, as the LoRID code
    assert [(s["adapter"], s["temperature"], s["top_p"]) for _, s in e.batcher.calls] == [
        (r, 1.5, 0.9) for r in ("ir", "kg", "dr")] * 2
    e = engine(tokenizer, {"ir": ["The answer is 7."], "kg": ["Add."], "dr": ["The answer is 8."]})
    LoRID(loop_cfg(preset="paper"), "dr")(Context(e), Q)  # lorid:dr alone stays greedy under the paper preset
    assert [s["temperature"] for _, s in e.batcher.calls] == [0.0, 0.0]


def test_lorid_over_http_with_the_openai_client(live, tokenizer):
    from mathdistill.serve.app import create_app

    e = engine(tokenizer, {"ir": ["The answer is 7."] * 2, "kg": ["Add."] * 2, "dr": ["The answer is 7."] * 2})
    models = {"lorid": LoRID(loop_cfg()), "lorid:ir": LoRID(loop_cfg(), "ir")}
    srv = live(create_app(e, models))
    c = openai.OpenAI(base_url=srv.url, api_key="none", max_retries=0)
    assert [m.id for m in c.models.list()] == ["lorid", "lorid:ir"]
    r = c.chat.completions.create(model="lorid", messages=[{"role": "user", "content": Q}])
    assert r.choices[0].model_extra["mathdistill"]["iterations"] == 1
    assert r.choices[0].model_extra["mathdistill"]["answer"] == "7"
    chunks = [ch for ch in c.chat.completions.create(model="lorid:ir", messages=[{"role": "user", "content": Q}],
                                                     stream=True) if ch.choices]  # not streamable: one piece
    assert [ch.choices[0].delta.content for ch in chunks if ch.choices[0].delta.content] == ["The answer is 7."]


def test_a_siked_student_chooses_its_strategy(tokenizer):
    e = engine(tokenizer, {"student": ["[PoT]\nans = 3 + 4", "no tag. The answer is 6.", "x = 3\nans = x + 4"]})
    chosen = Chosen(("cot", "pot", "eot"), None, "student")
    reply = chosen(Context(e), Q)
    assert (reply.format, reply.answer, reply.content) == ("pot", "7", "[PoT]\nans = 3 + 4")
    assert reply.extra == {"strategy": "pot"}
    reply = chosen(Context(e), Q)  # no tag: scored as CoT, counted as "none"
    assert (reply.format, reply.answer, reply.extra) == (None, "6", {"strategy": "none"})
    forced = Chosen(("cot", "pot", "eot"), "eot", "student")(Context(e), Q)
    assert forced.content == "[EoT]\nx = 3\nans = x + 4" and forced.answer == "7" and forced.format == "eot"
    prompts = [p for ps, _ in e.batcher.calls for p in ps]
    assert all("Choose a strategy ([CoT], [PoT] or [EoT]), write its tag first" in p for p in prompts)
    assert prompts[2].endswith("<|im_start|>assistant\n[EoT]\n") and not prompts[0].endswith("[PoT]\n")


def fake_run(tmp_path, scopes: dict, adapters: list[str]):
    for folder in adapters:
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "adapter_config.json").write_text(json.dumps({"r": 4}))
    return SimpleNamespace(path=tmp_path, scopes=[SimpleNamespace(name=n, status=s) for n, s in scopes.items()])


def test_fdd_and_siked_serve_their_last_finished_round(tmp_path):
    ev = SimpleNamespace(vote=True, preference=["pot", "eot", "cot"], samples=1)
    run = fake_run(tmp_path / "fdd", {"round-0": "done", "round-1": "done", "round-2": "running"},
                   ["round-0/train/student", "round-1/train/student"])
    served = serve_fdd(SimpleNamespace(thoughts=["cot", "pot", "eot"], eval=ev, retrain_from="base"), run)
    assert list(served.models) == ["fdd-etd-r1", "fdd-etd-r1:cot", "fdd-etd-r1:pot", "fdd-etd-r1:eot"]
    assert served.adapters == {"student": run.path / "round-1" / "train" / "student"} and served.model is None
    run = fake_run(tmp_path / "siked", {"iteration-0": "done", "iteration-1": "done"},
                   ["iteration-0/train/student", "iteration-1/train/student"])
    served = serve_siked(SimpleNamespace(method="siked", strategies=["cot", "pot"]), run)
    assert list(served.models) == ["siked-i1", "siked-i1:cot", "siked-i1:pot"]
    assert served.models["siked-i1:pot"] == Chosen(("cot", "pot"), "pot", "student")
    with pytest.raises(InputError, match="no round-<i> scope has finished"):
        serve_fdd(SimpleNamespace(thoughts=["cot"], eval=ev, retrain_from="base"),
                  fake_run(tmp_path / "none", {"round-0": "running"}, []))
