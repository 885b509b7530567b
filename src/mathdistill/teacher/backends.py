"""Teacher backends behind one interface: `await backend.complete(request) -> Reply`.

- `OpenAIBackend`: any OpenAI-compatible server (OpenAI, vLLM/SGLang serve, llama.cpp, Ollama)
  through the official async `openai` client, with the client's own retries off (the engine
  retries, counts and backs off).
- `ReplayBackend`: recorded rationales keyed by question text (e.g. ../shared/data/teacher).
- `HFBackend`: a transformers model in-process (tiny offline use).
- `VLLMBackend`: vLLM offline inference (optional extra `mathdistill[vllm]`), batched.

A backend raises `TransientError` for faults worth retrying (429, 5xx, timeouts, dropped
connections, malformed or cut-off replies) and `PermanentError` for the rest (other 4xx).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import functools
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mathdistill.io import InputError
from mathdistill.secrets import REDACTED, is_secret_name, redact

from .config import TeacherConfig


@dataclass
class Request:
    messages: list[dict]
    params: dict  # temperature, max_tokens, top_p?, seed?
    sample: int = 0
    question: str = ""  # replay looks rationales up by it


@dataclass
class Reply:
    text: str | None
    finish_reason: str | None = None
    usage: dict = field(default_factory=dict)  # prompt_tokens, completion_tokens
    error: str | None = None  # a definitive non-answer that is not a fault (a replay miss)


class TransientError(Exception):
    """Worth retrying. `retry_after` is the server's wish in seconds, if it said one."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(Exception):
    """Retrying will not help (bad request, auth, unknown model, ...)."""


class Backend:
    #: identity of the teacher: part of the cache key and the price lookup
    model: str = ""
    #: store replies in the reply cache (replay is free and instant: no)
    cacheable: bool = True
    #: upper bound on concurrent requests this backend can serve (None: the config decides)
    max_concurrency: int | None = None
    #: True when `complete_many` batches natively (the engine then sends chunks)
    batched: bool = False

    async def complete(self, request: Request) -> Reply:
        raise NotImplementedError

    async def complete_many(self, requests: list[Request]) -> list[Reply]:
        return list(await asyncio.gather(*(self.complete(r) for r in requests)))

    async def aclose(self) -> None:
        """Release connections; the backend stays usable (it reconnects on the next request)."""


# ---------------------------------------------------------------------------- OpenAI-compatible


def parse_retry_after(headers) -> float | None:
    """Seconds from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


RETRY_STATUS = {408, 429}  # plus every 5xx


@functools.cache
def _tls_context():
    """One TLS context per process: loading the CA bundle costs ~40 ms, once per client otherwise."""
    try:
        import httpx2 as httpx  # the HTTP library of recent openai releases
    except ImportError:
        import httpx

    return httpx.create_ssl_context()


def _http_client(transport: str = "auto"):
    """The openai client's own aiohttp transport (`auto`: when aiohttp is installed), else None: its
    httpx default. At high concurrency the client's per-request CPU delays each burst of replies
    on the one event loop; the aiohttp transport needs less of it (benchmarks/teacher.md)."""
    if transport == "httpx":
        return None
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        if transport == "aiohttp":
            raise InputError("teacher transport aiohttp: aiohttp is not installed (pip install 'openai[aiohttp]')") from None
        return None
    from openai import DefaultAioHttpClient

    return DefaultAioHttpClient(verify=_tls_context())


def _chain(e: BaseException | None):
    """An exception and its causes (explicit, else implicit), outermost first."""
    seen = []
    while e is not None and len(seen) < 32 and e not in seen:
        seen.append(e)
        e = e.__cause__ or e.__context__
    return seen


def _connection_fault(e: BaseException) -> str | None:
    """What a lost or refused connection says, or None when the cause is a timeout. The client's
    aiohttp transport reports every failed connection, a refused one included, as a connect
    timeout: the cause chain says which it really was."""
    try:
        from aiohttp import ClientConnectionError
    except ImportError:
        ClientConnectionError = ()
    chain = _chain(e)
    if any(isinstance(x, ConnectionRefusedError) for x in chain):
        return "connection refused"
    for x in chain:
        if isinstance(x, TimeoutError):  # asyncio's and aiohttp's timeouts are TimeoutErrors
            return None
        if isinstance(x, ConnectionError) or (ClientConnectionError and isinstance(x, ClientConnectionError)):
            return str(x) or type(x).__name__
    return None


def _split_url(url: str) -> tuple[str, dict[str, str], str | None]:
    """(base URL, query parameters, user info) of a server URL: `user:password@` in it means HTTP
    basic auth and `?api-key=...` a parameter of every request; the client gets them apart (aiohttp
    refuses user info beside an Authorization header, and a query inside the base URL would end up
    in front of the endpoint's path)."""
    from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    user = None
    netloc = parts.netloc
    if "@" in netloc:
        info, _, netloc = netloc.rpartition("@")
        user = unquote(info)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")), query, user


class OpenAIBackend(Backend):
    """`key_env` names the variable that holds the API key; none named: $OPENAI_API_KEY when set,
    else a placeholder (local servers ignore it; the client insists on one)."""

    def __init__(self, config: TeacherConfig):
        self._key = os.environ.get("OPENAI_API_KEY") or "none"
        if config.key_env:
            self._key = os.environ.get(config.key_env, "")
            if not self._key:
                raise InputError(f"--teacher-key-env {config.key_env}: that environment variable is not set")
        self.config = config
        self.model = config.model
        self._base_url, self._query, user = _split_url(config.url)
        self._headers = dict(config.headers)
        secrets = [self._key, *config.headers.values()]
        if user is not None:
            basic = base64.b64encode(user.encode()).decode()
            secrets += [user, *user.split(":"), basic]
            if not any(k.lower() == "authorization" for k in self._headers):
                self._headers["Authorization"] = f"Basic {basic}"
        secrets += [v for k, v in self._query.items() if is_secret_name(k)]
        # longest first, so that a secret containing another is cut whole
        self._secrets = sorted({x for x in secrets if len(x) >= 6 and x != "none"}, key=len, reverse=True)
        self._client, self._loop = None, None

    @property
    def client(self):
        """The async client of the running event loop (a client's connections belong to one loop)."""
        from openai import AsyncOpenAI

        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client, self._loop = (
                AsyncOpenAI(
                    base_url=self._base_url,
                    api_key=self._key,
                    default_headers=self._headers or None,
                    default_query=self._query or None,
                    timeout=self.config.timeout,
                    max_retries=0,  # the engine retries, counts and backs off
                    http_client=_http_client(self.config.transport),
                ),
                loop,
            )
        return self._client

    def body(self, request: Request) -> dict:
        """The chat-completions request body of `request` (online, or one line of a batch)."""
        return {"model": self.model, "messages": request.messages, **request.params, **self.config.extra_body}

    async def complete(self, request: Request) -> Reply:
        from openai.types.chat import ChatCompletion

        # client.post (the client's documented way to call any endpoint) rather than
        # chat.completions.create: same auth, errors and parsing, without create()'s per-call
        # walk over the request's type hints, which costs ~2.5 ms of CPU per few-shot request
        resp = await self.call(lambda: self.client.post(
            "/chat/completions", body=self.body(request), cast_to=ChatCompletion,
            options={"security": {"bearer_auth": True}}))
        try:
            choice = resp.choices[0]
            text = choice.message.content
            finish = choice.finish_reason
        except (AttributeError, IndexError, TypeError) as e:
            raise TransientError(f"malformed reply: no choices/message ({type(e).__name__})") from None
        usage = None
        if getattr(resp, "usage", None) is not None:
            usage = {"prompt_tokens": resp.usage.prompt_tokens, "completion_tokens": resp.usage.completion_tokens}
        return _reply(text, finish, usage)

    async def call(self, make):
        """`await make()`, a call of the client, with its errors turned into TransientError (429, 5xx, timeouts,
        lost connections, unparseable bodies) or PermanentError (other 4xx), secrets cut out of their messages."""
        import openai

        try:
            return await make()
        except openai.APIStatusError as e:
            status = e.status_code
            if status in RETRY_STATUS or status >= 500:
                raise TransientError(f"HTTP {status}", parse_retry_after(e.response.headers)) from None
            detail = e.body.get("message") if isinstance(e.body, dict) and e.body.get("message") else e.message
            raise PermanentError(f"HTTP {status}: {self._scrub(detail)}") from None
        except openai.APIConnectionError as e:  # APITimeoutError included
            fault = _connection_fault(e)
            if fault == "connection refused":
                raise TransientError(f"connection error: connection refused by {self._host()} - is the server running?") from None
            if fault is not None:
                raise TransientError(f"connection error: {self._scrub(fault)}") from None
            if isinstance(e, openai.APITimeoutError):
                raise TransientError(f"timeout: no reply within {self.config.timeout:g}s") from None
            raise TransientError(f"connection error: {self._scrub(e.__cause__ or e)}") from None
        except (ValueError, TypeError, KeyError, openai.APIResponseValidationError) as e:
            # unparseable body (bad JSON, wrong shape): a glitch on the wire or the server
            raise TransientError(f"malformed reply: {self._scrub(e)}") from None

    def reply_from(self, body: dict) -> Reply:
        """The Reply in a chat completion's JSON body (a batch's output line); TransientError when malformed."""
        try:
            choice = body["choices"][0]
            text, finish = choice["message"].get("content"), choice.get("finish_reason")
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            raise TransientError(f"malformed reply: no choices/message ({type(e).__name__})") from None
        return _reply(text, finish, body.get("usage"))

    def _host(self) -> str:
        from urllib.parse import urlsplit

        return urlsplit(self._base_url).netloc

    def _scrub(self, message) -> str:
        """A short error message with every secret cut out (some servers echo what they were sent)."""
        text = redact(" ".join(str(message).split()))
        for secret in self._secrets:
            text = text.replace(secret, "<key>" if secret == self._key else REDACTED)
        return text if len(text) <= 200 else text[:197] + "..."

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.close()
        self._client, self._loop = None, None


def _reply(text: str | None, finish: str | None, usage) -> Reply:
    """A chat completion's reply; an empty message that is neither filtered nor cut is a malformed reply."""
    if text is None and finish not in ("content_filter", "length"):
        raise TransientError(f"malformed reply: empty message (finish_reason={finish})")
    if usage is not None:
        get = usage.get if isinstance(usage, dict) else lambda k: getattr(usage, k, None)
        usage = {"prompt_tokens": get("prompt_tokens") or 0, "completion_tokens": get("completion_tokens") or 0}
    return Reply(text or "", finish, usage or {})


# ---------------------------------------------------------------------------- replay


def normalize_question(q: str) -> str:
    return " ".join(q.split()).lower()


def load_recordings(path: str | Path) -> dict[str, list[str]]:
    """normalised question -> recorded outputs, from a JSON list of {instruction, output}
    (also accepted: JSONL, and question/rationale/text as key names)."""
    from mathdistill.io import iter_jsonl, read_json

    path = Path(path)
    if path.suffix == ".jsonl":
        records = [(f"{path}:{n}", r) for n, r in iter_jsonl(path)]
    else:
        data = read_json(path)
        if not isinstance(data, list):
            raise InputError(f"{path}: expected a JSON list of {{instruction, output}} records")
        records = [(f"{path}[{i}]", r) for i, r in enumerate(data)]
    out: dict[str, list[str]] = {}
    for where, r in records:
        if not isinstance(r, dict):
            raise InputError(f"{where}: expected an object, got {type(r).__name__}")
        q = next((r[k] for k in ("instruction", "question") if k in r), None)
        a = next((r[k] for k in ("output", "rationale", "text") if k in r), None)
        if not isinstance(q, str):
            raise InputError(f"{where}: missing key 'instruction' (the question)")
        if not isinstance(a, str):
            raise InputError(f"{where}: missing key 'output' (the rationale)")
        out.setdefault(normalize_question(q), []).append(a)
    if not out:
        raise InputError(f"{path}: no recorded rationales in it")
    return out


class ReplayBackend(Backend):
    """Recorded rationales. Sample k of a question is its k-th recording across the files."""

    cacheable = False

    def __init__(self, files: list[str | Path]):
        self.files = [Path(f) for f in files]
        self.model = "replay:" + "+".join(f.name for f in self.files)
        self.table: dict[str, list[str]] = {}
        for f in self.files:
            for q, outs in load_recordings(f).items():
                self.table.setdefault(q, []).extend(outs)

    async def complete(self, request: Request) -> Reply:
        outs = self.table.get(normalize_question(request.question))
        if not outs:
            return Reply(None, error="replay miss: question not in " + ", ".join(f.name for f in self.files))
        if request.sample >= len(outs):
            return Reply(None, error=f"replay miss: no recording #{request.sample} (have {len(outs)})")
        return Reply(outs[request.sample], "stop", {})


# ---------------------------------------------------------------------------- in-process HF


class HFBackend(Backend):
    """A transformers causal LM run in this process, one request at a time (tiny offline use)."""

    max_concurrency = 1

    def __init__(self, config: TeacherConfig, model=None, tokenizer=None):
        self.model = "hf:" + str(config.model)
        self._name = config.model
        self._loaded = (model, tokenizer) if model is not None else None
        self._lock = threading.Lock()

    def _load(self):
        if self._loaded is None:
            from mathdistill.models import load_model

            self._loaded = load_model(self._name)
        return self._loaded

    def _generate(self, request: Request) -> Reply:
        import torch
        from transformers import set_seed

        with self._lock:
            model, tok = self._load()
            if getattr(tok, "chat_template", None):
                prompt = tok.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
            else:
                prompt = "\n\n".join(m["content"] for m in request.messages) + "\n"
            enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
            p = request.params
            temperature = p.get("temperature", 0.0)
            kwargs = {"max_new_tokens": p["max_tokens"], "do_sample": temperature > 0, "pad_token_id": tok.pad_token_id or tok.eos_token_id}
            if temperature > 0:
                kwargs.update(temperature=temperature, top_p=p.get("top_p", 1.0))
                set_seed(p.get("seed", 0) or 0)
            with torch.no_grad():
                out = model.generate(**enc, **kwargs)
            new = out[0, enc["input_ids"].shape[1] :]
            eos = tok.eos_token_id
            stopped = len(new) < p["max_tokens"] or (eos is not None and int(new[-1]) == eos)
            text = tok.decode(new, skip_special_tokens=True)
            usage = {"prompt_tokens": int(enc["input_ids"].shape[1]), "completion_tokens": int(len(new))}
            return Reply(text, "stop" if stopped else "length", usage)

    async def complete(self, request: Request) -> Reply:
        return await asyncio.to_thread(self._generate, request)


# ---------------------------------------------------------------------------- vLLM offline


class VLLMBackend(Backend):
    """vLLM's offline `LLM.chat` over a whole chunk of requests at once (optional extra)."""

    batched = True

    def __init__(self, config: TeacherConfig, **llm_kwargs):
        try:
            import vllm
        except ImportError:
            raise InputError("the vllm teacher needs vLLM: pip install 'mathdistill[vllm]'") from None
        self._vllm = vllm
        self.model = "vllm:" + str(config.model)
        self.llm = vllm.LLM(model=config.model, **llm_kwargs)

    def _params(self, p: dict):
        kw = {"temperature": p.get("temperature", 0.0), "max_tokens": p["max_tokens"]}
        if "top_p" in p:
            kw["top_p"] = p["top_p"]
        if p.get("seed") is not None:
            kw["seed"] = p["seed"]
        return self._vllm.SamplingParams(**kw)

    def _run(self, requests: list[Request]) -> list[Reply]:
        outs = self.llm.chat(
            [r.messages for r in requests], sampling_params=[self._params(r.params) for r in requests], use_tqdm=False
        )
        replies = []
        for o in outs:
            c = o.outputs[0]
            usage = {"prompt_tokens": len(o.prompt_token_ids or []), "completion_tokens": len(c.token_ids or [])}
            replies.append(Reply(c.text, c.finish_reason, usage))
        return replies

    async def complete_many(self, requests: list[Request]) -> list[Reply]:
        return await asyncio.to_thread(self._run, requests)

    async def complete(self, request: Request) -> Reply:
        return (await self.complete_many([request]))[0]


# ---------------------------------------------------------------------------- factory


def make_backend(config: TeacherConfig) -> Backend:
    """The backend `config.kind` names, ready to use."""
    if config.kind == "openai":
        return OpenAIBackend(config)
    if config.kind == "replay":
        return ReplayBackend(config.replay)
    if config.kind == "hf":
        return HFBackend(config)
    if config.kind == "vllm":
        return VLLMBackend(config)
    if config.kind == "reference":
        raise InputError("a reference teacher has no backend: its rationales are converted GSM8K gold solutions, "
                         "collected by mathdistill.teacher.collect (a recipe's teach stage), not requested from a model")
    raise InputError(f"unknown teacher kind '{config.kind}'")

