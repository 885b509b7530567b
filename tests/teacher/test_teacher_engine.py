"""The engine against an in-process fake OpenAI-compatible server: faults, accounting, cache, samples, limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mathdistill.io import InputError
from mathdistill.teacher import TeacherConfig, VerifyConfig, make_backend, teach

from teacher_helpers import index_of, problems

PRICE = {"prompt": 1000.0, "completion": 3000.0}  # USD per 1M tokens (large, so costs are visible)


def config(server, **kw) -> TeacherConfig:
    base = dict(url=server.url, model="fake-teacher", timeout=0.5, backoff_base=0.01, backoff_max=0.05,
                max_retries=3, concurrency=4, prices={"fake-teacher": PRICE})
    base.update(kw)
    return TeacherConfig(**base)


def run(server, probs, thought, tmp_path, samples=1, verify=None, **kw):
    cfg = config(server, **kw)
    return teach(probs, [thought], make_backend(cfg), config=cfg, samples=samples,
                 cache=tmp_path / "cache.sqlite", verify_config=verify)


FAULTS = {
    0: ["429:0.3"],
    1: ["500", "503"],
    2: ["hang"],
    3: ["drop"],
    4: ["malformed"],
    5: ["truncated"],
    6: ["empty"],
    7: ["400"],  # permanent: never retried
    8: ["500"] * 10,  # more 500s than retries
    9: ["length"],  # a paid reply, cut at max_tokens: recorded, unusable
}


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])  # the client's two transports fail differently
def test_faults_are_retried_and_accounted(fake_server, cot, tmp_path, transport):
    server = fake_server(script=lambda body: FAULTS.get(index_of(body), []), hang_s=10)
    probs = problems(12)
    res = run(server, probs, cot, tmp_path, transport=transport)
    s, rows = res.summary, {r["problem_id"]: r for r in res.rows}

    assert len(res.rows) == 12 and set(rows) == {p.id for p in probs}
    # every transient fault retried until success; the 400 sent once; the 500 storm gives up after 1 + 3 tries
    sent = {i: sum(1 for e in server.log if index_of(e["body"]) == i) for i in range(12)}
    assert sent == {0: 2, 1: 3, 2: 2, 3: 2, 4: 2, 5: 2, 6: 2, 7: 1, 8: 4, 9: 1, 10: 1, 11: 1}
    assert s["requests"] == server.count() == 23
    assert s["retries"] == 1 + 2 + 1 + 1 + 1 + 1 + 1 + 3
    assert s["failures"] == 2 and s["cache_hits"] == 0
    assert s["faults"]["HTTP 429"] == 1 and s["faults"]["HTTP 500"] == 5 and s["faults"]["HTTP 503"] == 1
    assert s["faults"]["timeout"] == 1 and s["faults"]["HTTP 400"] == 1
    assert s["faults"].get("connection error", 0) + s["faults"].get("malformed reply", 0) == 4

    for i in [0, 1, 2, 3, 4, 5, 6, 10, 11]:
        r = rows[f"p{i}"]
        assert r["correct"] and r["prediction"] == str(i + 4) and r["error"] is None and r["kept"], r
    assert rows["p7"]["text"] is None and "HTTP 400" in rows["p7"]["error"] and not rows["p7"]["correct"]
    assert rows["p8"]["text"] is None and rows["p8"]["error"].startswith("gave up after 4 attempts: HTTP 500")
    assert rows["p9"]["finish_reason"] == "length" and not rows["p9"]["correct"] and not rows["p9"]["kept"]
    assert "finish_reason=length" in rows["p9"]["error"]
    assert s["length_cut"] == 1 and s["per_thought"]["cot"]["correct"] == 9

    # tokens and cost: exactly what the server billed (11 completed replies incl. the cut one)
    billed = server.usage_total()
    assert server.answered == 10
    assert (s["prompt_tokens"], s["completion_tokens"]) == (billed["prompt_tokens"], billed["completion_tokens"])
    expected_cost = (billed["prompt_tokens"] * PRICE["prompt"] + billed["completion_tokens"] * PRICE["completion"]) / 1e6
    assert s["cost"] == pytest.approx(expected_cost) and s["cost_total"] == pytest.approx(expected_cost)
    assert sum(r["cost"] for r in res.rows) == pytest.approx(expected_cost)

    # Retry-After honoured: the retry of problem 0 came >= 0.3 s after its 429
    t429, t_ok = [e["time"] for e in server.log if index_of(e["body"]) == 0]
    assert t_ok - t429 >= 0.3

    # re-run: only the two failed jobs are sent again; everything paid for comes from the cache
    before = server.count()
    res2 = run(server, probs, cot, tmp_path)
    s2 = res2.summary
    assert s2["cache_hits"] == 10
    assert server.count() - before == s2["requests"] == 1 + 4  # p7 now answers; p8 still 500s
    assert sum(1 for e in server.log if index_of(e["body"]) not in (7, 8)) == sum(sent[i] for i in sent if i not in (7, 8))
    assert res2.summary["failures"] == 1 and {r["problem_id"] for r in res2.rows if r["correct"]} == {f"p{i}" for i in [0, 1, 2, 3, 4, 5, 6, 7, 10, 11]}
    assert s2["cost_total"] == pytest.approx(expected_cost + res2.summary["cost"])


def test_resume_sends_nothing_twice(fake_server, cot, tmp_path):
    server = fake_server()
    probs = problems(6)
    first = run(server, probs, cot, tmp_path, samples=2, temperature=0.5)
    assert server.count() == 12 and first.summary["requests"] == 12
    second = run(server, probs, cot, tmp_path, samples=2, temperature=0.5)
    assert server.count() == 12  # nothing sent
    assert second.summary["requests"] == 0 and second.summary["cache_hits"] == 12
    assert second.summary["cost"] == 0 and second.summary["cost_total"] == pytest.approx(first.summary["cost_total"])
    strip = lambda rows: [{k: v for k, v in r.items() if k != "cached"} for r in rows]
    assert strip(second.rows) == strip(first.rows)
    assert all(r["cached"] for r in second.rows) and not any(r["cached"] for r in first.rows)


def test_cache_key_covers_model_and_sampling(fake_server, cot, tmp_path):
    server = fake_server()
    probs = problems(3)
    run(server, probs, cot, tmp_path, max_tokens=64)
    run(server, probs, cot, tmp_path, max_tokens=64)
    assert server.count() == 3
    run(server, probs, cot, tmp_path, max_tokens=65)  # other sampling parameters: new requests
    assert server.count() == 6
    run(server, probs, cot, tmp_path, max_tokens=64, model="other-model")  # other teacher model
    assert server.count() == 9


def test_samples_seeds_and_dedupe(fake_server, cot, tmp_path):
    server = fake_server()
    probs = problems(4)
    res = run(server, probs, cot, tmp_path, samples=3, temperature=0.8)
    assert sorted((r["problem_id"], r["sample"]) for r in res.rows) == [(p.id, k) for p in probs for k in range(3)]
    bodies = [e["body"] for e in server.log]
    assert sorted(b["seed"] for b in bodies) == [0] * 4 + [1] * 4 + [2] * 4 and {b["temperature"] for b in bodies} == {0.8}
    # the fake teacher writes the same text for every sample: normalised dedupe keeps one per problem
    assert sum(r["kept"] for r in res.rows) == 4 and sum(r["correct"] for r in res.rows) == 12
    assert sum(r["duplicate"] for r in res.rows) == 8
    again = run(server, probs, cot, tmp_path, samples=3, temperature=0.8, verify=VerifyConfig(dedupe="none"))
    assert sum(r["kept"] for r in again.rows) == 12 and server.count() == 12
    capped = run(server, probs, cot, tmp_path, samples=3, temperature=0.8,
                 verify=VerifyConfig(dedupe="none", max_per_problem=2))
    assert sum(r["kept"] for r in capped.rows) == 8


def test_several_samples_need_temperature(fake_server, cot, tmp_path):
    server = fake_server()
    with pytest.raises(InputError, match="temperature"):
        run(server, problems(1), cot, tmp_path, samples=2, temperature=0.0)
    res = run(server, problems(1), cot, tmp_path, samples=2)  # default temperature for samples > 1
    assert {e["body"]["temperature"] for e in server.log} == {0.7} and len(res.rows) == 2


def test_rate_limiter_schedule(monkeypatch):
    """GCRA schedule on a virtual clock: a burst of one second's worth, then evenly spaced."""
    import asyncio

    from mathdistill.teacher import engine

    clock, waits = [100.0], []

    async def fake_sleep(s):
        waits.append(round(s, 6))

    monkeypatch.setattr(engine.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(engine.asyncio, "sleep", fake_sleep)

    async def go(limiter, amounts):
        for n in amounts:
            await limiter.acquire(n)

    asyncio.run(go(engine.RateLimiter(300), [1] * 8))  # 5 per second
    assert waits == [0.2, 0.4, 0.6]  # the first five go at once
    waits.clear()
    tpm = engine.RateLimiter(6000)  # 100 tokens/s: a 300-token request goes at once, in debt
    asyncio.run(go(tpm, [300, 300]))
    assert waits == [pytest.approx(2.01)]  # (300 tokens of debt - a 99-token burst) / 100 per s
    waits.clear()
    tpm.adjust(-250)  # the last request used 250 tokens less than reserved
    asyncio.run(go(tpm, [10]))
    assert waits == [pytest.approx(2.51)]


def send_times(server, probs, thought, tmp_path, **kw) -> list[float]:
    """When the engine handed each request to the backend (client clock: a starved server thread
    could log them late, and so closer together, but a request never leaves before it is due)."""
    import time

    cfg = config(server, **kw)
    backend, sent = make_backend(cfg), []
    complete = backend.complete

    async def timed(request):
        sent.append(time.monotonic())
        return await complete(request)

    backend.complete = timed
    teach(probs, [thought], backend, config=cfg, cache=tmp_path / "cache.sqlite")
    return sorted(sent)


def test_request_rate_limit_spaces_requests(fake_server, cot, tmp_path):
    times = send_times(fake_server(), problems(10), cot, tmp_path, concurrency=10, rpm=300)  # 5/s, burst of 5
    assert len(times) == 10
    assert times[-1] - times[0] >= 0.9  # nominally >= 1.0 s (5 at once, then one per 0.2 s); unlimited: ~0


def test_token_rate_limit_spaces_requests(fake_server, cot, tmp_path):
    probs = problems(5)
    # each request reserves ~chars/4 + max_tokens tokens; allow one request's worth per 0.5 s
    chars = sum(len(m["content"]) for m in cot.teacher_messages(probs[0].question))
    per_request = chars // 4 + 60
    times = send_times(fake_server(), probs, cot, tmp_path, concurrency=5, tpm=per_request * 120, max_tokens=60)
    assert len(times) == 5
    assert times[-1] - times[0] >= 0.9  # nominally 1.0 s (a burst, then one per 0.5 s); unlimited: ~0


def test_key_only_from_env_and_never_written(fake_server, cot, tmp_path, monkeypatch):
    secret = "sk-test-DO-NOT-WRITE-7c1e9a"
    server = fake_server(script=lambda body: ["401"] if index_of(body) == 0 else [])  # its error echoes the key
    cfg = config(server, key_env="MD_TEST_TEACHER_KEY", headers={"X-Project": "mathdistill"})
    with pytest.raises(InputError, match="MD_TEST_TEACHER_KEY"):
        make_backend(cfg)  # env var not set: a clear error, no request
    monkeypatch.setenv("MD_TEST_TEACHER_KEY", secret)
    out = tmp_path / "out"
    res = teach(problems(3), [cot], make_backend(cfg), config=cfg, out_dir=out)
    assert res.rows[0]["error"] == "HTTP 401: scripted 401 for Bearer <key>"
    assert all(e["headers"].get("authorization") == f"Bearer {secret}" for e in server.log)
    assert all(e["headers"].get("x-project") == "mathdistill" for e in server.log)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"rationales.jsonl", "teach_summary.json", "teacher_cache.sqlite"}
    for p in files:
        assert secret.encode() not in p.read_bytes(), p
    assert secret not in json.dumps(cfg.public_dict())


def test_out_dir_rows_follow_the_contract(fake_server, cot, tmp_path):
    server = fake_server()
    out = tmp_path / "out"
    cfg = config(server)
    teach(problems(2), [cot], make_backend(cfg), config=cfg, out_dir=out, samples=1)
    rows = [json.loads(line) for line in Path(out / "rationales.jsonl").read_text().splitlines()]
    need = {"problem_id", "question", "gold", "thought", "sample", "text", "prediction", "correct", "finish_reason", "usage"}
    assert len(rows) == 2 and all(need <= set(r) for r in rows)
    assert rows[0]["usage"]["prompt_tokens"] > 0 and rows[0]["thought"] == "cot"
    summary = json.loads((out / "teach_summary.json").read_text())
    assert summary["requests"] == 2 and summary["per_thought"]["cot"]["yield"] == 1.0


def test_keep_rules(fake_server, cot, tmp_path):
    def reply(body):  # right on even problems, wrong on odd ones
        i = index_of(body)
        return f"The answer is {i + 4 if i % 2 == 0 else i + 5}"

    server = fake_server(reply=reply, script=lambda body: ["length"] if index_of(body) == 0 else [])
    probs = problems(4)  # p0 cut at max_tokens, p1 and p3 wrong, p2 right
    kept = {}
    for keep in ("correct", "usable", "all"):
        res = run(server, probs, cot, tmp_path, verify=VerifyConfig(keep=keep))
        kept[keep] = [r["problem_id"] for r in res.rows if r["kept"]]
    assert kept == {"correct": ["p2"], "usable": ["p1", "p2", "p3"], "all": ["p0", "p1", "p2", "p3"]}
    assert server.count() == 4  # verification rules never re-ask the teacher
