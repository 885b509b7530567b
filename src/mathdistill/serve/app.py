"""The HTTP side of `mathdistill serve`: an OpenAI-compatible API on FastAPI, run by uvicorn.

    GET  /v1/models                 the served names (a run's result-row names), each with its formats
    GET  /v1/models/{name}
    POST /v1/chat/completions       the last user message is the question
    POST /v1/completions            the prompt is the question (a list of prompts: one choice each)
    GET  /health                    {"status": "ok", "models", "batching": counters}

Requests are parsed here (not by FastAPI's body binding) so every refusal has an OpenAI-style body
`{"error": {"message", "type", "param", "code"}}`: malformed JSON, a missing or wrong field -> 400,
unknown model -> 404, body over `max_body` bytes -> 413, a prompt that does not fit the context ->
400 (`context_length_exceeded`), wrong or missing key (with `api_key`) -> 401, more than
`max_concurrency + max_waiting` requests in flight -> 503 (`Retry-After: 1`); an inference that
crashes -> 500. None of them stops the server. OpenAI fields this server does not use (`logprobs`,
`presence_penalty`, `user`, ...) are accepted and ignored; `n` must be 1.

Each choice carries the `mathdistill` field: `{"answer", "format", "answers": {format: answer},
"errors": {format: why no answer}}` (+ `rationales` of the formats not chosen, for a vote), and the
content is the chosen rationale. `stream: true` streams a single-format model's rationale as it is
decoded; other models send it in one piece once their inference is done; the last chunk carries
`finish_reason` and the `mathdistill` field. With calculator decoding (`serve --calculator`: the
value of every arithmetic step the student writes is computed and forced, `student.calculator`),
the `mathdistill` field also has `calculator_interventions` (values forced for that choice) and
`usage` their sum (an extra key, which OpenAI clients keep: `usage.model_extra`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Literal, Union

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException

from mathdistill.io import InputError
from mathdistill.serve.inference import Context, Engine, Options, RequestError
from mathdistill.student.stopping import cut_at_stop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    max_body: int = 1 << 20  # bytes of one request body
    max_concurrency: int = 64  # requests answered at once (their generations are batched together)
    max_waiting: int = 1024  # requests queued beyond those; more -> 503
    max_tokens: int = 4096  # the largest max_tokens a request may ask for
    max_prompts: int = 64  # prompts in one /v1/completions request


# ----------------------------------------------------------------------------- request bodies


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Union[str, list[_Part], None] = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = None
    stream: bool | None = False
    stream_options: dict | None = None
    stop: Union[str, list[str], None] = Field(None)
    seed: int | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop strings")
        return v

    @field_validator("n")
    @classmethod
    def _n(cls, v):
        if v not in (None, 1):
            raise ValueError("this server gives one choice per prompt (n must be 1)")
        return v

    def options(self, limits: Limits) -> Options:
        asked = self.max_completion_tokens or self.max_tokens
        if asked is not None and asked > limits.max_tokens:
            raise RequestError(400, f"max_tokens is {asked}; this server allows at most {limits.max_tokens}",
                               param="max_tokens")
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return Options(asked, self.temperature, self.top_p, self.seed, tuple(s for s in stop if s))


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)

    def question(self) -> str:
        users = [m for m in self.messages if m.role == "user"]
        if not users or not users[-1].text().strip():
            raise RequestError(400, "messages: the student answers the last user message, and there is none with "
                               "text", param="messages")
        return users[-1].text().strip()


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str]]

    @field_validator("prompt", mode="before")
    @classmethod
    def _text(cls, v):
        if not isinstance(v, str) and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            raise ValueError("give the question as text, a string or a list of strings (token ids are not taken)")
        return v

    def questions(self, limits: Limits) -> list[str]:
        prompts = [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
        if not prompts or any(not p.strip() for p in prompts):
            raise RequestError(400, "prompt: give the question (a non-empty string, or a list of them)", param="prompt")
        if len(prompts) > limits.max_prompts:
            raise RequestError(400, f"prompt: {len(prompts)} prompts; at most {limits.max_prompts} per request",
                               param="prompt")
        return [p.strip() for p in prompts]


def _invalid(e: ValidationError) -> RequestError:
    """The first problem pydantic found, as an OpenAI-style 400."""
    err = e.errors()[0]
    if err["type"] == "json_invalid":
        return RequestError(400, f"We could not parse the JSON body of your request: {err['ctx'].get('error', err['msg'])}")
    loc = ".".join(str(p) for p in err["loc"])
    if not loc:
        return RequestError(400, f"the request body must be a JSON object with the request's fields ({err['msg']})")
    msg = "field required" if err["type"] == "missing" else err["msg"]
    return RequestError(400, f"{loc}: {msg}", param=loc)


# ----------------------------------------------------------------------------- the app


def create_app(engine: Engine, models: dict, limits: Limits = Limits(), api_key: str | None = None,
               on_ready=None, cards: dict[str, dict] | None = None):
    """The FastAPI app answering for `models` ({served name: inference}) with `engine`; `cards`: more of what
    /v1/models says of a name (`serve.inference.model_cards`: base model and training-data provenance)."""
    limiter = anyio.CapacityLimiter(limits.max_concurrency)
    state = {"in_flight": 0}
    created = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if on_ready is not None:
            on_ready(app)
        yield
        engine.batcher.close()

    app = FastAPI(title="mathdistill", lifespan=lifespan, docs_url=None, redoc_url=None)

    def error(e: RequestError) -> JSONResponse:
        headers = {"Retry-After": "1"} if e.status == 503 else None
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

    @app.exception_handler(RequestError)
    async def _request_error(request, e: RequestError):
        return error(e)

    @app.exception_handler(HTTPException)
    async def _http_error(request, e: HTTPException):
        what = "Unknown request URL" if e.status_code == 404 else e.detail
        return error(RequestError(e.status_code, f"{what}: {request.method} {request.url.path}"))

    @app.exception_handler(Exception)
    async def _crash(request, e: Exception):
        log.exception("request failed")
        return error(RequestError(500, f"internal error: {type(e).__name__}: {e}", type="server_error"))

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if api_key is not None and request.url.path.startswith("/v1"):
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
                return error(RequestError(401, "Incorrect API key provided (send it as 'Authorization: Bearer KEY').",
                                          code="invalid_api_key"))
        return await call_next(request)

    def card(name: str) -> dict:
        inf = models[name]
        return {"id": name, "object": "model", "created": created, "owned_by": "mathdistill",
                "mathdistill": {"formats": list(getattr(inf, "formats", ())), "inference": getattr(inf, "summary", ""),
                                "streams": bool(getattr(inf, "streamable", False)), **(cards or {}).get(name, {})}}

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": list(models), "in_flight": state["in_flight"],
                "batching": dict(engine.batcher.stats)}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [card(n) for n in models]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str):
        return card(lookup(name)[0])

    def lookup(name: str):
        if name not in models:
            raise RequestError(404, f"The model '{name}' does not exist; this server serves {', '.join(models)}",
                               param="model", code="model_not_found")
        return name, models[name]

    async def parse(request: Request, kind: type[BaseModel]):
        size = request.headers.get("content-length", "")
        if size.isdigit() and int(size) > limits.max_body:
            raise RequestError(413, f"request body of {size} bytes; at most {limits.max_body}")
        chunks, n = [], 0
        async for chunk in request.stream():
            n += len(chunk)
            if n > limits.max_body:
                raise RequestError(413, f"request body over {limits.max_body} bytes")
            chunks.append(chunk)
        try:
            return kind.model_validate_json(b"".join(chunks) or b"null")
        except ValidationError as e:
            raise _invalid(e) from None

    def acquire() -> None:
        if state["in_flight"] >= limits.max_concurrency + limits.max_waiting:
            raise RequestError(503, f"the server is busy ({state['in_flight']} requests in flight); retry shortly",
                               type="server_error", code="overloaded")
        state["in_flight"] += 1

    def release(*_) -> None:
        state["in_flight"] -= 1

    async def answer(inference, ctx: Context, question: str):
        try:
            return await anyio.to_thread.run_sync(inference, ctx, question, limiter=limiter)
        except InputError as e:
            raise RequestError(400, str(e)) from None

    def info(reply, ctx: Context) -> dict:
        """The choice's `mathdistill` field: the reply's answers (+ with --calculator, the values forced)."""
        out = reply.info()
        if ctx.calculator:
            out["calculator_interventions"] = ctx.interventions
        return out

    def choice(kind: str, i: int, reply, ctx: Context) -> dict:
        body = {"message": {"role": "assistant", "content": reply.content}} if kind == "chat" else {"text": reply.content}
        return {"index": i, **body, "finish_reason": reply.finish_reason, "logprobs": None,
                "mathdistill": info(reply, ctx)}

    def usage(ctxs) -> dict:
        p, c = sum(x.prompt_tokens for x in ctxs), sum(x.completion_tokens for x in ctxs)
        out = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
        if any(x.calculator for x in ctxs):  # an extra key: OpenAI clients keep unknown usage fields
            out["calculator_interventions"] = sum(x.interventions for x in ctxs)
        return out

    async def respond(kind: str, req: _Sampling, questions: list[str]):
        name, inference = lookup(req.model)
        options = req.options(limits)
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        head = {"id": rid, "object": "chat.completion" if kind == "chat" else "text_completion",
                "created": int(time.time()), "model": name}
        if req.stream:
            if len(questions) != 1:
                raise RequestError(400, "stream: one prompt per streamed request", param="stream")
            return await stream(kind, head, inference, options, questions[0], req.stream_options or {})
        acquire()
        try:
            ctxs = [Context(engine, options) for _ in questions]
            replies = await asyncio.gather(*(answer(inference, c, q) for c, q in zip(ctxs, questions)))
        finally:
            release()
        return {**head, "choices": [choice(kind, i, r, c) for i, (r, c) in enumerate(zip(replies, ctxs))],
                "usage": usage(ctxs)}

    async def stream(kind, head, inference, options, question, stream_options):
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        streams = bool(getattr(inference, "streamable", False))
        ctx = Context(engine, options, (lambda t: loop.call_soon_threadsafe(pieces.put_nowait, t)) if streams else None)
        acquire()
        task = asyncio.ensure_future(answer(inference, ctx, question))
        task.add_done_callback(release)  # the request holds its place while its inference runs
        task.add_done_callback(lambda _: pieces.put_nowait(None))
        first = await pieces.get()
        if first is None and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # refused before any text: a plain error reply
        chunk_kind = "chat.completion.chunk" if kind == "chat" else "text_completion"

        def event(delta: dict, finish=None, extra=None) -> str:
            body = {"delta": delta} if kind == "chat" else {"text": delta.get("content", "")}
            c = {"index": 0, **body, "finish_reason": finish, "logprobs": None, **(extra or {})}
            return "data: " + json.dumps({**head, "object": chunk_kind, "choices": [c]}) + "\n\n"

        async def events():
            sent, text, cut = "", "", False
            hold = max((len(s) for s in options.stop), default=1) - 1
            if kind == "chat":
                yield event({"role": "assistant", "content": ""})
            piece = first
            while piece is not None:
                if not cut:
                    text += piece
                    upto = len(cut_at_stop(text, options.stop))
                    cut = upto < len(text)
                    ready = text[: upto if cut else max(len(sent), len(text) - hold)]
                    if len(ready) > len(sent):
                        yield event({"content": ready[len(sent):]})
                        sent = ready
                piece = await pieces.get()
            try:
                reply = await task
            except RequestError as e:
                yield "data: " + json.dumps(e.body()) + "\n\n"
                return
            except Exception as e:  # noqa: BLE001 - reported to the client, the server goes on
                log.exception("streamed request failed")
                yield "data: " + json.dumps(RequestError(500, f"internal error: {e}", "server_error").body()) + "\n\n"
                return
            rest = reply.content[len(sent):] if reply.content.startswith(sent) else ""
            if rest:
                yield event({"content": rest})
            yield event({}, reply.finish_reason, {"mathdistill": info(reply, ctx)})
            if stream_options.get("include_usage"):
                yield "data: " + json.dumps({**head, "object": chunk_kind, "choices": [], "usage": usage([ctx])}) + "\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        req = await parse(request, ChatRequest)
        return await respond("chat", req, [req.question()])

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = await parse(request, CompletionRequest)
        return await respond("text", req, req.questions(limits))

    return app


def listen(host: str = "127.0.0.1", port: int = 8000):
    """A listening socket on host:port (port 0: a free one); InputError when the address is taken or wrong."""
    import socket

    try:
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                    backlog=2048)
    except (OSError, OverflowError) as e:
        raise InputError(f"--host {host} --port {port}: cannot listen there ({getattr(e, 'strerror', None) or e})") from None
    return sock


def run_server(app, sock) -> None:
    """Serve `app` with uvicorn on the listening `sock` until interrupted (`app.state.port`: its port)."""
    import uvicorn

    app.state.port = sock.getsockname()[1]
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_keep_alive=30)).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully on Ctrl-C, then raises the signal again
        pass
