"""Sandbox for untrusted model-written Python (PoT) and equation solving (EoT).

`run_python(programs)` -> list[Result(value, error, stdout, seconds)], executed in parallel in
a pool of warm workers, each task in a fresh, confined fork. See pool.py / zygote.py / jail.py.
The pool is imported lazily so that sandbox workers themselves stay small (cheap to fork).
"""

__all__ = ["Limits", "Pool", "Result", "SandboxUnavailable", "get_pool", "run", "run_python", "shutdown"]


def __getattr__(name):
    if name in __all__:
        from mathdistill.sandbox import pool

        return getattr(pool, name)
    raise AttributeError(name)
