"""The server's HTTP side with scripted completions (no model): the official `openai` client (sync and
async) on every served name, the `mathdistill` answer field, streaming, PoT programs that hang or
attack the sandbox, and the bad-request table (status, OpenAI-style error body, server still answers)."""

from __future__ import annotations

import asyncio
import json
import re
import threading

import httpx
import openai
import pytest
from serve_helpers import ScriptedBatcher, scripted_engine

from mathdistill.serve import Vote, family
from mathdistill.serve.app import Limits, create_app

Q = "Tom has 3 apples and buys 4 more. How many apples does he have?"
SCRIPT = {
    Q: {"cot": "3 + 4 = 7 apples.\nThe answer is 7.", "pot": "apples = 3\nbought = 4\nans = apples + bought",
        "eot": "x = 3\ny = 4\nans = x + y + 1"},
    "hang": {"pot": "while True:\n    pass"},
    "memory": {"pot": "x = bytearray(16 * 1024**3)\nans = 1"},
    "escape": {"pot": "import socket\ns = socket.create_connection(('1.1.1.1', 80), timeout=1)\nans = 1"},
}
MODELS = family("etd", ["cot", "pot", "eot"], vote=True, preference=["pot", "eot", "cot"])


@pytest.fixture
def server(live, tokenizer):
    engine = scripted_engine(tokenizer, SCRIPT, context=256)
    srv = live(create_app(engine, MODELS, Limits(max_body=4096, max_tokens=128)))
    srv.engine = engine
    return srv


def client(srv, **kw):
    return openai.OpenAI(base_url=srv.url, api_key="none", max_retries=0, **kw)


def ask(c, model="etd", question=Q, **kw):
    return c.chat.completions.create(model=model, messages=[{"role": "user", "content": question}], **kw)


def test_models_lists_the_served_names_with_their_formats(server):
    models = {m.id: m for m in client(server).models.list()}
    assert list(models) == ["etd", "etd:cot", "etd:pot", "etd:eot"]
    assert models["etd"].model_extra["mathdistill"]["formats"] == ["cot", "pot", "eot"]
    assert models["etd:pot"].model_extra["mathdistill"] == {"formats": ["pot"], "inference": "one format",
                                                            "streams": True}
    assert client(server).models.retrieve("etd:eot").id == "etd:eot"


def test_each_name_answers_with_its_inference_and_the_answer_field(server):
    c = client(server)
    vote = ask(c, "etd")
    info = vote.choices[0].model_extra["mathdistill"]
    # cot and pot say 7, eot says 8: the vote is 7; pot comes first in the preference, so its program is the content
    assert info["answer"] == "7" and info["format"] == "pot"
    assert info["answers"] == {"cot": "7", "pot": "7", "eot": "8"}
    assert vote.choices[0].message.content == SCRIPT[Q]["pot"]
    assert info["rationales"] == {"cot": SCRIPT[Q]["cot"], "eot": SCRIPT[Q]["eot"]}
    assert vote.usage.completion_tokens > 0 and vote.usage.prompt_tokens > 0
    # the three formats were generated in one call, each with its own trigger and the chat template
    prompts, settings = server.engine.batcher.calls[-1]
    assert len(prompts) == 3 and all(p.startswith("<|im_start|>") for p in prompts)
    assert settings["max_new_tokens"] == 64 and settings["temperature"] == 0.0
    for name, fmt, answer in [("etd:cot", "cot", "7"), ("etd:pot", "pot", "7"), ("etd:eot", "eot", "8")]:
        r = ask(c, name)
        assert r.choices[0].message.content == SCRIPT[Q][fmt]
        assert r.choices[0].model_extra["mathdistill"] == {"answer": answer, "format": fmt, "answers": {fmt: answer}}
        assert r.model == name and r.choices[0].finish_reason == "stop"


def test_the_async_client_gets_concurrent_answers(server):
    async def main():
        c = openai.AsyncOpenAI(base_url=server.url, api_key="none", max_retries=0)
        rs = await asyncio.gather(*(c.chat.completions.create(model=m, messages=[{"role": "user", "content": Q}])
                                    for m in ["etd", "etd:cot", "etd:pot", "etd:eot"] * 3))
        await c.close()
        return rs

    rs = asyncio.run(main())
    assert [r.choices[0].model_extra["mathdistill"]["answer"] for r in rs] == ["7", "7", "7", "8"] * 3


def test_request_settings_reach_generation(server):
    ask(client(server), "etd:cot", max_tokens=20, temperature=0.7, top_p=0.9, seed=3, stop=["\n"])
    _, settings = server.engine.batcher.calls[-1]
    assert settings | {"adapter": None} == {"adapter": None, "max_new_tokens": 20, "temperature": 0.7, "top_p": 0.9,
                                            "num_samples": 1, "stop": ("\n",), "loop_stop": True}


def test_completions_answer_each_prompt(server):
    r = client(server).completions.create(model="etd:eot", prompt=[Q, "What is 2 + 3?"])
    assert [ch.text for ch in r.choices] == [SCRIPT[Q]["eot"], "The answer is 5."]
    assert [ch.model_extra["mathdistill"]["answer"] for ch in r.choices] == ["8", None]
    assert r.choices[1].model_extra["mathdistill"]["errors"]["eot"]  # prose is not an equation system


def test_streaming_a_single_format_model(server):
    chunks = list(ask(client(server), "etd:cot", stream=True, stream_options={"include_usage": True}))
    pieces = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert len(pieces) > 3 and "".join(pieces) == SCRIPT[Q]["cot"]
    last = [ch for ch in chunks if ch.choices][-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.choices[0].model_extra["mathdistill"]["answer"] == "7"
    assert chunks[-1].usage.completion_tokens > 0
    # a stop string is never streamed, not even its first characters
    pieces = [ch.choices[0].delta.content or "" for ch in ask(client(server), "etd:cot", stream=True, stop=["The ans"])
              if ch.choices]
    assert "".join(pieces) == "3 + 4 = 7 apples.\n"


def test_streaming_a_vote_sends_the_chosen_rationale_at_once(server):
    chunks = [ch for ch in ask(client(server), "etd", stream=True) if ch.choices]
    contents = [ch.choices[0].delta.content for ch in chunks if ch.choices[0].delta.content]
    assert contents == [SCRIPT[Q]["pot"]]
    assert chunks[-1].choices[0].model_extra["mathdistill"]["format"] == "pot"


def test_streamed_completions(server):
    r = client(server).completions.create(model="etd:pot", prompt=Q, stream=True)
    chunks = list(r)
    assert "".join(ch.choices[0].text for ch in chunks) == SCRIPT[Q]["pot"]
    assert chunks[-1].choices[0].model_extra["mathdistill"]["answer"] == "7"


def test_programs_that_hang_or_attack_the_sandbox_give_no_answer_and_the_reason(server):
    async def main():
        c = openai.AsyncOpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=60)
        rs = await asyncio.gather(*(c.chat.completions.create(model="etd:pot", messages=[{"role": "user", "content": q}])
                                    for q in ["hang", "memory", "escape"]))
        await c.close()
        return [r.choices[0].model_extra["mathdistill"] for r in rs]

    hang, memory, escape = asyncio.run(main())
    assert hang["answer"] is None and re.search("timeout|CPU", hang["errors"]["pot"])
    assert memory["answer"] is None and "MemoryError" in memory["errors"]["pot"]
    assert escape["answer"] is None and escape["errors"]["pot"]
    assert ask(client(server), "etd:pot").choices[0].model_extra["mathdistill"]["answer"] == "7"  # still serving


# ----------------------------------------------------------------------------- the bad-request table

CHAT, COMPLETIONS = "/chat/completions", "/completions"
GOOD = {"model": "etd:cot", "messages": [{"role": "user", "content": Q}]}
LONG = " ".join(["apples"] * 300)
#: case -> (method, path, body (bytes: sent as is), status, error substring, param)
BAD = {
    "malformed JSON": ("POST", CHAT, b'{"model": "etd", "messages": [', 400, "could not parse the JSON body", None),
    "not a JSON object": ("POST", CHAT, b"[1, 2]", 400, "must be a JSON object", None),
    "empty body": ("POST", CHAT, b"", 400, "must be a JSON object", None),
    "missing model": ("POST", CHAT, {"messages": GOOD["messages"]}, 400, "model: field required", "model"),
    "missing messages": ("POST", CHAT, {"model": "etd"}, 400, "messages: field required", "messages"),
    "empty messages": ("POST", CHAT, {"model": "etd", "messages": []}, 400, "at least 1 item", "messages"),
    "unknown role": ("POST", CHAT, {"model": "etd", "messages": [{"role": "wizard", "content": "x"}]}, 400,
                     "messages.0.role", "messages.0.role"),
    "no user message": ("POST", CHAT, {"model": "etd", "messages": [{"role": "system", "content": "x"}]}, 400,
                        "last user message", "messages"),
    "unknown model": ("POST", CHAT, {**GOOD, "model": "gpt-9"}, 404, "does not exist", "model"),
    "n > 1": ("POST", CHAT, {**GOOD, "n": 2}, 400, "n must be 1", "n"),
    "temperature out of range": ("POST", CHAT, {**GOOD, "temperature": 5}, 400, "less than or equal to 2", "temperature"),
    "max_tokens above the limit": ("POST", CHAT, {**GOOD, "max_tokens": 100000}, 400, "at most 128", "max_tokens"),
    "prompt longer than the context": ("POST", CHAT, {**GOOD, "messages": [{"role": "user", "content": LONG}]}, 400,
                                       "maximum context length is 256", "messages"),
    "body over the size limit": ("POST", CHAT, {**GOOD, "messages": [{"role": "user", "content": "x" * 5000}]}, 413,
                                 "at most 4096", None),
    "empty prompt": ("POST", COMPLETIONS, {"model": "etd", "prompt": ""}, 400, "prompt", "prompt"),
    "token-id prompt": ("POST", COMPLETIONS, {"model": "etd", "prompt": [1, 2, 3]}, 400, "token ids", "prompt"),
    "streaming several prompts": ("POST", COMPLETIONS, {"model": "etd", "prompt": ["a", "b"], "stream": True}, 400,
                                  "one prompt per streamed request", "stream"),
    "unknown URL": ("POST", "/embeddings", {"model": "etd", "input": "x"}, 404, "Unknown request URL", None),
    "wrong method": ("GET", CHAT, None, 405, "Method Not Allowed", None),
    "inference crashes": ("POST", CHAT, {**GOOD, "messages": [{"role": "user", "content": "CRASH"}]}, 500,
                          "scripted crash", None),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_get_openai_errors_and_the_server_goes_on(server, case):
    method, path, body, status, text, param = BAD[case]
    content = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else None
    r = httpx.request(method, server.url + path, content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and text in err["message"], err
    assert err["param"] == param
    assert err["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    ok = httpx.post(server.url + CHAT, json=GOOD)  # still answering
    assert ok.status_code == 200 and ok.json()["choices"][0]["mathdistill"]["answer"] == "7"


def test_the_openai_client_raises_its_own_errors(server):
    c = client(server)
    with pytest.raises(openai.NotFoundError) as e:
        ask(c, "gpt-9")
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        ask(c, "etd", question=LONG)
    assert ask(c, "etd").choices[0].model_extra["mathdistill"]["answer"] == "7"


def test_too_many_requests_in_flight_get_503(live, tokenizer):
    engine = scripted_engine(tokenizer, SCRIPT)
    engine.batcher.gate = threading.Event()
    srv = live(create_app(engine, MODELS, Limits(max_concurrency=1, max_waiting=1)))
    held = [threading.Thread(target=httpx.post, args=(srv.url + CHAT, ), kwargs={"json": GOOD, "timeout": 60})
            for _ in range(2)]
    for t in held:
        t.start()
    deadline = 100
    while httpx.get(srv.url.removesuffix("/v1") + "/health").json()["in_flight"] < 2 and deadline:
        threading.Event().wait(0.05)
        deadline -= 1
    r = httpx.post(srv.url + CHAT, json=GOOD)
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and r.json()["error"]["code"] == "overloaded"
    engine.batcher.gate.set()
    for t in held:
        t.join()
    assert httpx.post(srv.url + CHAT, json=GOOD).status_code == 200


def test_the_api_key_is_checked_when_one_is_set(live, tokenizer):
    srv = live(create_app(scripted_engine(tokenizer, SCRIPT), MODELS, api_key="s3cret"))
    with pytest.raises(openai.AuthenticationError) as e:
        ask(openai.OpenAI(base_url=srv.url, api_key="wrong", max_retries=0))
    assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
    assert httpx.get(srv.url + "/models").status_code == 401  # no key at all
    good = openai.OpenAI(base_url=srv.url, api_key="s3cret", max_retries=0)
    assert ask(good).choices[0].model_extra["mathdistill"]["answer"] == "7"
    assert httpx.get(srv.url.removesuffix("/v1") + "/health").status_code == 200


def test_vote_samples_and_ties():
    """Several samples per format vote together; the content is a sample that gave the winning answer."""

    from mathdistill.serve import Context, Defaults, Engine
    from mathdistill.models import load_tokenizer

    class Samples(ScriptedBatcher):
        def submit(self, prompts, settings, seeds=None, on_text=None):
            from concurrent.futures import Future

            from mathdistill.student.generate import Generation

            texts = {"cot": ["The answer is 4.", "The answer is 9."], "pot": ["ans = 9.0", "ans = 1"]}
            fut = Future()
            fut.set_result([Generation(texts["pot" if "[PoT]" in p else "cot"], [3, 3], [False, False]) for p in prompts])
            return fut

    from types import SimpleNamespace

    tok = load_tokenizer("smollm2-135m")
    engine = Engine(SimpleNamespace(config=SimpleNamespace(max_position_embeddings=512)), tok, Samples({}), Defaults())
    reply = Vote(("cot", "pot"), ("cot", "pot"), samples=2)(Context(engine), "q")
    assert reply.answer == "9" and reply.format == "cot" and reply.content == "The answer is 9."
    assert reply.answers == {"cot": ["4", "9"], "pot": ["9", "1"]}
