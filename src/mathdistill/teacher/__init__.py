"""teacher stage: backends, the engine (concurrency, rate limits, retries, cache, cost), verification.

    from mathdistill.teacher import TeacherConfig, collect, make_backend, teach
    cfg = TeacherConfig(url="http://127.0.0.1:8000/v1", model="m", key_env="OPENAI_API_KEY")
    result = teach(problems, "cot", make_backend(cfg), config=cfg, samples=4, out_dir="runs/x/teacher")
    # a recipe's teach stage: one format, any teacher kind (reference included), fails on failed requests
    result = collect(problems, "pot", TeacherConfig(kind="reference"), "runs/x/teach/pot")
"""

from .backends import Backend, Reply, Request, make_backend
from .cache import ReplyCache, request_key
from .collector import collect
from .config import Price, TeacherConfig
from .engine import TeacherError, TeachResult, VerifyConfig, ateach, teach

__all__ = [
    "Backend", "Reply", "Request", "make_backend", "ReplyCache", "request_key", "Price",
    "TeacherConfig", "TeacherError", "TeachResult", "VerifyConfig", "ateach", "collect", "teach",
]
