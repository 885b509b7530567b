"""`collect`: one format's rationales from any teacher kind, into rationales.jsonl + summary.json;
the one teacher schema (TeacherConfig, `reference` included); the engine asks the format for its context."""

from __future__ import annotations

import json

import pytest

from mathdistill import thoughts
from mathdistill.data import Problem, load
from mathdistill.io import InputError
from mathdistill.teacher import TeacherConfig, TeacherError, collect, make_backend, teach
from mathdistill.teacher.config import build
from mathdistill.thoughts.cot import CoT

from teacher_helpers import index_of, problems

ROW_KEYS = {"problem_id", "question", "gold", "thought", "sample", "text", "prediction", "correct", "error",
            "finish_reason", "usage", "kept"}
SUMMARY_KEYS = {"thought", "teacher", "offline_stand_in", "problems", "rationales", "correct", "kept", "yield",
                "requests", "cache_hits", "tokens", "cost"}


def written(out) -> tuple[list[dict], dict]:
    rows = [json.loads(line) for line in (out / "rationales.jsonl").read_text().splitlines()]
    return rows, json.loads((out / "summary.json").read_text())


@pytest.fixture
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MATHDISTILL_CACHE", str(tmp_path / "cache"))  # reference conversions are cached there


def test_reference_pot_rows_are_executed_programs(data_dir, tmp_path, user_cache):
    probs = load("gsm8k", "train", data_dir=data_dir, limit=6)
    # the gold solution's note says 3*4=13: the program computes 12, so execution rejects it
    bad = Problem("bad", "Tom has 3 bags of 4 apples. How many apples?", "13", "gsm8k",
                  {"solution": "He has 3*4=<<3*4=13>>13 apples.\n#### 13"})
    out = tmp_path / "teach" / "pot"
    res = collect([*probs, bad], "pot", TeacherConfig(kind="reference"), out, samples=4, progress=False)
    rows, summary = written(out)
    assert rows == res.rows and summary == res.summary and res.failed == []
    assert all(set(r) == ROW_KEYS and r["thought"] == "pot" and r["sample"] == 0 for r in rows)
    assert [r["problem_id"] for r in rows] == [p.id for p in probs] + ["bad"]  # one per problem: samples n/a
    kept = [r for r in rows if r["kept"]]
    assert len(kept) >= 5 and rows[-1]["kept"] is False and rows[-1]["text"] is None
    pot = thoughts.get("pot")
    for r in kept:  # each kept text is a program that, executed in the sandbox, gives the gold answer
        assert r["text"].splitlines()[-1].startswith("ans = ")
        assert pot.extract(r["text"]).prediction == r["prediction"] == r["gold"]
    assert set(summary) >= SUMMARY_KEYS
    assert summary["teacher"] == "reference: GSM8K gold solutions converted to pot and verified by execution"
    assert summary["offline_stand_in"] is True
    assert (summary["problems"], summary["rationales"], summary["kept"]) == (7, 7, len(kept))
    assert summary["requests"] == 0 and summary["tokens"] == {"prompt": 0, "completion": 0} and summary["cost"] == 0.0


def test_reference_refuses_what_it_cannot_convert(data_dir, tmp_path, user_cache):
    probs = load("gsm8k", "train", data_dir=data_dir, limit=2)
    with pytest.raises(InputError, match="not to l2m"):
        collect(probs, "l2m", TeacherConfig(kind="reference"), tmp_path / "a", progress=False)
    svamp = Problem("svamp-1", "2 + 3?", "5", "svamp")
    with pytest.raises(InputError, match="svamp-1 has no GSM8K solution"):
        collect([svamp], "cot", TeacherConfig(kind="reference"), tmp_path / "b", progress=False)
    assert not (tmp_path / "a" / "summary.json").exists() and not (tmp_path / "b" / "summary.json").exists()


def test_replay_from_the_data_root(data_dir, tmp_path):
    probs = load("gsm8k", "train", data_dir=data_dir, limit=5)
    cfg = TeacherConfig(kind="replay", replay=["teacher/gsm8k_train_llama3-70b_cot.json"])  # relative to the data root
    out = tmp_path / "cot"
    res = collect(probs, "cot", cfg, out, data_dir=data_dir, progress=False)
    rows, summary = written(out)
    assert summary == res.summary and len(rows) == 5 and all(set(r) >= ROW_KEYS for r in rows)
    assert all(r["text"] and r["finish_reason"] == "stop" for r in rows)
    scored = thoughts.get("cot").score_batch([r["text"] for r in rows], [r["gold"] for r in rows])
    assert [r["correct"] for r in rows] == [s.correct for s in scored] and sum(r["kept"] for r in rows) >= 4
    assert summary["teacher"] == "replay: gsm8k_train_llama3-70b_cot.json (recorded outputs)"
    assert summary["offline_stand_in"] is True and summary["correct"] == sum(s.correct for s in scored)
    with pytest.raises(InputError, match="teacher/missing.json: not found"):
        collect(probs, "cot", TeacherConfig(kind="replay", replay=["teacher/missing.json"]), tmp_path / "x",
                data_dir=data_dir, progress=False)


def test_openai_failed_requests_fail_the_call_and_the_next_sends_only_them(fake_server, tmp_path):
    # problem 2's first attempt gets a 500; with no retries that request fails, the next call's attempt succeeds
    server = fake_server(script=lambda body: ["500"] if index_of(body) == 2 else [])
    cfg = TeacherConfig(url=server.url, model="fake-teacher", max_retries=0, concurrency=2)
    out = tmp_path / "teach" / "cot"
    with pytest.raises(TeacherError, match="1 of 4 teacher requests failed"):
        collect(problems(4), "cot", cfg, out, progress=False)
    assert len(server.log) == 4 and not (out / "summary.json").exists()  # not marked complete

    res = collect(problems(4), "cot", cfg, out, progress=False)
    assert len(server.log) == 5 and index_of(server.log[-1]["body"]) == 2  # only the failed one was sent again
    rows, summary = written(out)
    assert summary == res.summary and set(summary) >= SUMMARY_KEYS
    assert all(r["correct"] and r["kept"] for r in rows) and len(rows) == 4
    assert summary["requests"] == 1 and summary["cache_hits"] == 3 and summary["kept"] == 4
    assert summary["teacher"] == f"openai-compatible: fake-teacher @ {server.url}"
    assert summary["offline_stand_in"] is False and summary["tokens"]["completion"] > 0


def test_collect_refuses_bad_keep_and_dedupe(tmp_path):
    with pytest.raises(InputError, match="keep 'best'"):
        collect(problems(1), "cot", TeacherConfig(kind="reference"), tmp_path, keep="best")
    with pytest.raises(InputError, match="dedupe 'fuzzy'"):
        collect(problems(1), "cot", TeacherConfig(kind="reference"), tmp_path, dedupe="fuzzy")


# ----------------------------------------------------------------------------- the one teacher schema


def test_teacher_config_reference_kind_and_defaults():
    assert TeacherConfig(url="http://h/v1", model="m").max_tokens == 1024
    ref = build({"kind": "reference"})
    assert ref.offline_stand_in and ref.describe("eot").startswith("reference: GSM8K gold solutions converted to eot")
    with pytest.raises(InputError, match="reference teacher takes no url"):
        build({"kind": "reference", "url": "http://h/v1", "model": "m"}, where="recipe.yaml: teach.pot")
    with pytest.raises(InputError, match="has no backend"):
        make_backend(ref)
    live = TeacherConfig(url="http://user:sk-secret@h:8000/v1?api-key=k2&v=1", model="m")
    assert not live.offline_stand_in
    shown = live.describe("cot")
    assert shown.startswith("openai-compatible: m @ http://") and "sk-secret" not in shown and "k2" not in shown


# ----------------------------------------------------------------------------- the format supplies its context


class Hinted(CoT):
    """A format whose teacher needs one more input: the problem's id."""

    def teacher_context(self, problem):
        return {"hint": f"hint for {problem.id}"}

    def teacher_messages(self, question, context=None):
        return [{"role": "user", "content": f"{question}\n{context['hint']}"}]


def test_engine_asks_the_format_for_its_context(fake_server, tmp_path):
    server = fake_server()
    cfg = TeacherConfig(url=server.url, model="fake-teacher")
    teach(problems(3), [Hinted()], make_backend(cfg), config=cfg, cache=tmp_path / "c.sqlite")
    sent = sorted(e["body"]["messages"][-1]["content"].splitlines()[-1] for e in server.log)
    assert sent == ["hint for p0", "hint for p1", "hint for p2"]
    # an explicit context still wins over the format's
    teach(problems(1), [Hinted()], make_backend(cfg), config=cfg, cache=tmp_path / "d.sqlite",
          context={"p0": {"hint": "given"}})
    assert server.log[-1]["body"]["messages"][-1]["content"].endswith("\ngiven")
