"""Teacher configuration: which backend, how hard to push it, how to sample, what it costs.

The one teacher schema, for recipes (`teach:` sections) and the `teach` command alike. Kinds:
`openai` (any OpenAI-compatible server: url, model), `replay` (recorded outputs: replay files),
`hf` / `vllm` (a model run here), `reference` (GSM8K gold solutions converted to the format and
verified by execution: no backend, only `mathdistill.teacher.collect` serves it).

The API key itself is never part of the config: only the *name* of the environment variable
that holds it (`key_env`; none named: $OPENAI_API_KEY). A URL may still carry credentials
(`user:password@`, `?api-key=`) and headers may carry tokens: `public_dict()` redacts them, and is
what gets written to disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mathdistill.io import InputError, read_yaml_mapping
from mathdistill.secrets import redact, redact_url

#: kinds that stand in for a live teacher offline (a report must say so)
OFFLINE_KINDS = ("reference", "replay")


class Price(BaseModel):
    """USD per one million tokens."""

    model_config = ConfigDict(extra="forbid")
    prompt: float = Field(0.0, ge=0)
    completion: float = Field(0.0, ge=0)

    def cost(self, usage: dict | None) -> float:
        usage = usage or {}
        return (
            (usage.get("prompt_tokens") or 0) * self.prompt + (usage.get("completion_tokens") or 0) * self.completion
        ) / 1e6


class BatchSettings(BaseModel):
    """`mode: batch`: requests go out through the OpenAI Files + Batches API (mathdistill.teacher.batch)."""

    model_config = ConfigDict(extra="forbid")
    price_factor: float = Field(0.5, gt=0, le=1, description="share of the list price a batched request costs")
    poll_interval: float = Field(30.0, gt=0, description="seconds between two looks at a running batch")
    max_requests: int = Field(50_000, ge=1, description="requests per batch input file (the API's limit: 50,000)")
    max_bytes: int = Field(200_000_000, ge=1024, description="bytes per batch input file (the API's limit: 200 MB)")
    completion_window: str = Field("24h", description="the batch's completion window (the API accepts 24h)")
    retry: Literal["batch", "online"] = Field(
        "batch", description="requests a batch did not answer (expired, cancelled, a retryable error): sent again "
        "in a new batch, or online at the list price")
    max_rounds: int = Field(3, ge=1, description="batches a request may go out in per run before it counts as "
                            "failed (a re-run tries again)")


class TeacherConfig(BaseModel):
    """Everything about one teacher. `kind` picks the backend; the rest tunes the engine."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["openai", "replay", "hf", "vllm", "reference"] = "openai"
    # openai-compatible server (OpenAI, vLLM/SGLang serve, llama.cpp server, Ollama)
    url: str | None = None
    model: str | None = None
    key_env: str | None = None  # NAME of the env var holding the key, never the key (None: OPENAI_API_KEY)
    headers: dict[str, str] = Field(default_factory=dict)
    extra_body: dict = Field(default_factory=dict)  # passed through to the server as-is
    # the openai client's HTTP transport: aiohttp (less CPU per request) when installed, else httpx
    transport: Literal["auto", "aiohttp", "httpx"] = "auto"
    # online: one request at a time (concurrency, rate limits); batch: the Files + Batches API, at its price
    mode: Literal["online", "batch"] = "online"
    batch: BatchSettings = Field(default_factory=BatchSettings)
    # `--plan` counts prompt tokens with this HF tokenizer (an id in the local HF cache or a folder; nothing is
    # downloaded); None: the model name's, when it is there; else ~4 characters per token
    tokenizer: str | None = None
    # replay: recorded rationales (JSON list of {instruction, output}); sample k comes from file k.
    # A relative path not found as given is looked up in the data root by `with_data_root`.
    replay: list[Path] = Field(default_factory=list)
    # accounting: model name -> price; unknown models cost 0
    prices: dict[str, Price] = Field(default_factory=dict)
    # engine
    concurrency: int = Field(8, ge=1)
    rpm: float | None = Field(None, gt=0)  # requests per minute
    tpm: float | None = Field(None, gt=0)  # tokens per minute (prompt estimate + max_tokens)
    timeout: float = Field(120.0, gt=0)  # seconds per request
    max_retries: int = Field(6, ge=0)
    backoff_base: float = Field(1.0, ge=0)  # first retry waits ~this many seconds, then doubles
    backoff_max: float = Field(60.0, ge=0)
    retry_after_max: float = Field(600.0, ge=0)  # cap on a server's Retry-After
    # sampling
    temperature: float | None = Field(None, ge=0)  # None: 0 for one sample, 0.7 for several
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int = Field(1024, ge=1)
    seed: int | None = 0  # sample k is requested with seed + k (None: no seed sent)

    @model_validator(mode="after")
    def _check_kind(self):
        if self.kind == "openai" and not (self.url and self.model):
            raise ValueError("an openai-compatible teacher needs both url and model")
        if self.kind == "replay" and not self.replay:
            raise ValueError("a replay teacher needs at least one replay file")
        if self.kind in ("hf", "vllm") and not self.model:
            raise ValueError(f"a {self.kind} teacher needs a model")
        if self.kind == "reference" and (self.url or self.model or self.replay):
            raise ValueError("a reference teacher takes no url, model or replay files (it converts the GSM8K gold solutions)")
        if self.mode == "batch" and self.kind != "openai":
            raise ValueError(f"mode batch sends requests through an OpenAI-compatible Batch API: not for a "
                             f"{self.kind} teacher")
        return self

    @property
    def offline_stand_in(self) -> bool:
        """True for teachers that stand in for a live one offline (reference, replay)."""
        return self.kind in OFFLINE_KINDS

    def describe(self, thought: str) -> str:
        """Who wrote `thought`'s rationales, in words for a report (credentials in a URL redacted)."""
        if self.kind == "reference":
            return f"reference: GSM8K gold solutions converted to {thought} and verified by execution"
        if self.kind == "replay":
            return f"replay: {', '.join(Path(f).name for f in self.replay)} (recorded outputs)"
        if self.kind == "openai":
            return f"openai-compatible: {self.model} @ {redact_url(self.url)}" + (
                " (Batch API)" if self.mode == "batch" else "")
        return f"{self.kind}: {self.model} (run in this process)"

    def with_data_root(self, data_dir: str | Path | None = None) -> "TeacherConfig":
        """A copy whose relative replay paths that do not exist as given point into the data root
        (`mathdistill.data.recorded.resolve_recorded`: else the user cache, fetched once for the
        known recordings); an InputError names a file found nowhere."""
        from mathdistill.data.recorded import resolve_recorded

        files = [f if f.is_absolute() or f.exists() else resolve_recorded(f, data_dir) for f in self.replay]
        return self.model_copy(update={"replay": files})

    def sampling(self, samples: int) -> dict:
        """The sampling parameters sent with every request (and hashed into the cache key)."""
        temperature = self.temperature
        if temperature is None:
            temperature = 0.7 if samples > 1 else 0.0
        if samples > 1 and temperature <= 0:
            raise InputError(f"{samples} samples per problem need a temperature > 0 (got {temperature})")
        params = {"temperature": temperature, "max_tokens": self.max_tokens}
        if self.top_p is not None:
            params["top_p"] = self.top_p
        return params

    def price(self, model: str | None) -> Price:
        return self.prices.get(model or "", Price())

    def public_dict(self) -> dict:
        """The config as JSON, safe to write to disk: header values, credentials inside the URL and
        key-like query parameters replaced by <redacted> (mathdistill.secrets.redact)."""
        return redact(self.model_dump(mode="json"))

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> "TeacherConfig":
        """Read YAML/JSON, apply non-None overrides, validate; errors name the file and key."""
        path = Path(path)
        data = read_yaml_mapping(path, "a mapping of teacher settings")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return build(data, where=str(path))


def build(data: dict, where: str = "teacher config") -> TeacherConfig:
    """Validate a dict into a TeacherConfig; pydantic errors become one InputError naming the key."""
    try:
        return TeacherConfig.model_validate(data)
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(map(str, err['loc'])) or '(config)'}: {err['msg']}" for err in e.errors())
        raise InputError(f"{where}: {msgs}") from None
