"""Process-wide settings every heavy command shares: torch threads and library noise.

    runtime.set_threads(1)     # before any torch work; also caps the BLAS/OpenMP pools
    runtime.quiet(verbose)     # library FutureWarnings / TRL's padding-free notice off unless verbose
    config_option(EvalConfig, "max_new_tokens", "--max-new-tokens")   # a command's option, from its config

Two torch processes with 2 threads each on a 2-core machine slow each other ~8x (measured: 13 s ->
100 s per training step); run two jobs side by side with `--threads 1` each.
"""

from __future__ import annotations

import logging
import os
import warnings

from mathdistill.io import InputError

_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
VERBOSE = False


def set_threads(n: int | None) -> None:
    """Use `n` CPU threads for torch (and the BLAS pools of processes started from here); None: leave as is."""
    if n is None:
        return
    if n < 1:
        raise InputError(f"--threads must be >= 1 (got {n})")
    for name in _THREAD_ENV:
        os.environ[name] = str(n)
    import torch

    torch.set_num_threads(n)


def quiet(verbose: bool = False) -> None:
    """Silence library warnings that say nothing to a user of this tool, unless `verbose`."""
    global VERBOSE
    VERBOSE = verbose
    if verbose:
        logging.getLogger("mathdistill").setLevel(logging.DEBUG)
        return
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # TRL: "Padding-free training is enabled, but the attention implementation is not set to ..."
    warnings.filterwarnings("ignore", message=r".*[Pp]adding-free training.*")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("transformers", "trl", "peft", "accelerate", "datasets", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)


def threads_option():
    """The `--threads N` option every heavy command takes."""
    import typer

    return typer.Option(
        None, "--threads", min=1,
        help="CPU threads for torch (default: all cores). Two jobs side by side on a 2-core machine: --threads 1 each.",
    )


def config_option(model, name: str, *decls: str, bounds: bool = True, **kw):
    """A typer option for field `name` of the pydantic config class `model`: its default, its bounds (ge / le, and
    gt for an integer, as typer's min / max; a float's gt checked by a callback; `bounds=False`: none, for a
    command that validates its values with `model` itself) and its description as the help, so a command is
    built from its config rather than re-typed. `kw`: typer's own settings, or a `help` / `default` where the
    command's differ (say why there)."""
    import typer

    field = model.model_fields[name]
    text = field.description or ""
    code = any(c in text.split(" ")[0] for c in "._`")  # a leading code name keeps its case (torch.compile)
    opts = {"help": (text if code else text[:1].upper() + text[1:]) + "."}
    for m in field.metadata if bounds else ():
        if getattr(m, "ge", None) is not None:
            opts["min"] = m.ge
        elif getattr(m, "gt", None) is not None and field.annotation is int:
            opts["min"] = m.gt + 1
        elif getattr(m, "gt", None) is not None:
            opts["callback"] = _above(m.gt)
        if getattr(m, "le", None) is not None:
            opts["max"] = m.le
    opts.update(kw)
    default = opts.pop("default", field.get_default(call_default_factory=True))
    return typer.Option(default, *decls, **opts)


def _above(bound: float):
    def check(value):
        import typer

        if value is not None and not value > bound:
            raise typer.BadParameter(f"must be > {bound} (got {value})")
        return value

    return check
