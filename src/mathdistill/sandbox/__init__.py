"""Sandbox for untrusted model-written Python (PoT) and equation solving (EoT).

`run_python(programs)` -> list[Result(value, error, stdout, seconds)], executed in parallel in
a pool of warm workers, each task in a fresh, confined fork. See pool.py / zygote.py / jail.py.
"""

from mathdistill.sandbox.pool import Limits, Pool, Result, SandboxUnavailable, get_pool, run_python, shutdown

__all__ = ["Limits", "Pool", "Result", "SandboxUnavailable", "get_pool", "run_python", "shutdown"]
