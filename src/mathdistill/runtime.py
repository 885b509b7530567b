"""Process-wide settings every heavy command shares: torch threads and library noise.

    runtime.set_threads(1)     # before any torch work; also caps the BLAS/OpenMP pools
    runtime.quiet(verbose)     # library FutureWarnings / TRL's padding-free notice off unless verbose

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
