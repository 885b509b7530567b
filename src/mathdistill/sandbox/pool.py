"""Parent side of the sandbox: a pool of warm workers (see zygote.py) and the task API.

    from mathdistill.sandbox import run_python, get_pool
    run_python(["ans = 6 * 7", "print(2 + 2)"])   # -> [Result(value='42'), Result(value='4')]

One worker per CPU by default; each serves one task at a time, forking a fresh confined
process per task. A worker that stops answering, dies, or reports trouble is killed and
replaced; the pool keeps serving. Created lazily, shut down at interpreter exit.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

log = logging.getLogger(__name__)

UNSHARE = ["unshare", "--user", "--map-root-user", "--net", "--mount", "--pid", "--fork",
           "--kill-child", "--mount-proc"]
STARTUP_TIMEOUT = 60.0  # sympy import on a loaded machine
GRACE = 30.0  # extra seconds the parent waits beyond a task's own timeout before replacing a worker
MAX_LINE = 1 << 20


@dataclass
class Limits:
    """Per-task resource limits."""

    timeout: float = 5.0  # wall clock, seconds
    cpu_s: int = 0  # CPU seconds (0: ceil(timeout))
    memory_mb: int = 1024  # address space
    nproc: int = 16  # processes (per sandbox namespace)
    fsize_mb: int = 16  # largest file a task may write


@dataclass
class Result:
    value: str | None  # answer string the task produced
    error: str | None = None
    stdout: str = ""  # tail of what the program printed
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.value is not None


class SandboxUnavailable(RuntimeError):
    pass


def _mode() -> str:
    """'auto' (namespaces, else loud fallback), 'strict' (namespaces or fail), 'off'."""
    mode = os.environ.get("MATHDISTILL_SANDBOX", "auto").lower()
    if mode not in ("auto", "strict", "off"):
        raise ValueError(f"MATHDISTILL_SANDBOX must be auto, strict or off, not {mode!r}")
    return mode


def _worker_env() -> dict:
    """The worker's environment: nothing from ours but what Python needs to find the package.

    It also names what the worker hides ($HOME, /run) and which folders under $HOME Python
    needs back (e.g. ~/.pyenv, a project checked out in $HOME), and the code folders under /tmp
    that must show through the worker's private /tmp (read-only)."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "PYTHONDONTWRITEBYTECODE": "1",
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    home = os.path.realpath(os.path.expanduser("~"))
    hide = ["/run"]
    keep = set()
    if home not in ("/", "") and os.path.isdir(home):
        hide.append(home)
        for p in [*sys.path, sys.prefix, sys.exec_prefix, sys.base_prefix, os.path.dirname(sys.executable)]:
            p = os.path.realpath(p or ".")
            if p.startswith(home + os.sep):  # keep the first folder below $HOME that holds it
                keep.add(os.path.join(home, os.path.relpath(p, home).split(os.sep)[0]))
    env["MATHDISTILL_SANDBOX_HIDE"] = ":".join(hide)
    env["MATHDISTILL_SANDBOX_KEEP"] = ":".join(sorted(keep))
    # code that lives under /tmp (a checkout or a venv there) would vanish under the private /tmp
    tmp_code = {os.path.realpath(p) for p in [*sys.path, sys.prefix, sys.exec_prefix] if p}
    env["MATHDISTILL_SANDBOX_TMP_KEEP"] = ":".join(
        sorted(p for p in tmp_code if p.startswith("/tmp" + os.sep) and os.path.isdir(p)))
    return env


class Worker:
    """One warm zygote process, talking JSON lines over pipes."""

    def __init__(self, isolated: bool):
        self.isolated = isolated
        self.proc: subprocess.Popen | None = None
        self.buf = b""
        self.info: dict = {}
        self.n_tasks = 0

    def start(self) -> None:
        cmd = [sys.executable, "-m", "mathdistill.sandbox.zygote"]
        if self.isolated:
            cmd = UNSHARE + cmd + ["--isolated"]
        self.buf = b""
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=_worker_env(), cwd="/",
                                     start_new_session=True, close_fds=True)
        line = self._read_line(STARTUP_TIMEOUT)
        try:
            info = json.loads(line) if line else {"ready": False, "error": "no handshake"}
        except ValueError:
            info = {"ready": False, "error": f"bad handshake {line[:100]!r}"}
        if not isinstance(info, dict) or not info.get("ready"):
            self.kill()
            raise SandboxUnavailable(f"sandbox worker did not start: {info.get('error') if isinstance(info, dict) else info}")
        self.info = info

    def _read_line(self, timeout: float) -> bytes | None:
        """One line from the worker, or None on timeout / EOF / an over-long line."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or len(self.buf) > MAX_LINE:
                return None
            if not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def run(self, func: str, arg, limits: Limits) -> Result:
        """Run one task; on any worker trouble, kill + restart the worker and report an error."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        task = {"id": self.n_tasks, "func": func, "arg": arg, "timeout": limits.timeout,
                "limits": {"cpu_s": limits.cpu_s or max(1, int(limits.timeout + 0.999)),
                           "memory_mb": limits.memory_mb, "nproc": limits.nproc,
                           "fsize_mb": limits.fsize_mb}}
        self.n_tasks += 1
        try:
            self.proc.stdin.write((json.dumps(task) + "\n").encode())
            self.proc.stdin.flush()
            line = self._read_line(limits.timeout + GRACE)
            reply = json.loads(line) if line else None
            if not isinstance(reply, dict) or reply.get("id") != task["id"]:
                raise RuntimeError("no valid reply")
        except (OSError, ValueError, RuntimeError) as e:
            log.warning("sandbox worker misbehaved (%s); replacing it", e)
            self.restart()
            return Result(None, f"sandbox worker failed ({e}); replaced")
        if reply.get("fatal"):
            log.warning("sandbox worker reported %s; replacing it", reply["fatal"])
            self.restart()
        return Result(reply.get("value"), reply.get("error"), reply.get("stdout") or "",
                      float(reply.get("seconds") or 0.0))

    def restart(self) -> None:
        self.kill()
        self.start()

    def kill(self) -> None:
        """SIGKILL the worker's whole session (unshare + the namespace's PID 1, hence all inside)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        self.proc.wait()
        self.proc = None

    def close(self, timeout: float = 2.0) -> None:
        """Ask the worker to exit (EOF on stdin), then make sure it did."""
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


class Pool:
    """Warm sandbox workers shared by every caller in this process (use `get_pool()`)."""

    def __init__(self, workers: int | None = None, mode: str | None = None):
        self.n = workers or max(1, os.cpu_count() or 1)
        mode = mode or _mode()
        self.isolated = mode != "off"
        first = Worker(self.isolated)
        try:
            first.start()
        except (SandboxUnavailable, OSError) as e:
            if mode == "strict" or not self.isolated:
                raise SandboxUnavailable(str(e)) from e
            msg = (f"SANDBOX WITHOUT NAMESPACES: Linux namespaces are unavailable here ({e}). "
                   "Untrusted programs will run with rlimits, a scrubbed environment, a throw-away "
                   "directory and (when root) as nobody, but with network access and without a "
                   "read-only filesystem. Set MATHDISTILL_SANDBOX=strict to refuse this.")
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            log.error(msg)
            self.isolated = False
            first = Worker(False)
            first.start()
        self.info = first.info
        self.workers = [first] + [Worker(self.isolated) for _ in range(self.n - 1)]
        self.idle: queue.Queue[Worker] = queue.Queue()
        for w in self.workers:
            self.idle.put(w)
        self.executor = ThreadPoolExecutor(self.n, thread_name_prefix="sandbox")
        self.pid = os.getpid()
        self.closed = False

    def _one(self, func: str, arg, limits: Limits) -> Result:
        w = self.idle.get()
        try:
            return w.run(func, arg, limits)
        except Exception as e:  # e.g. a replacement worker failed to start
            log.error("sandbox task failed: %s", e)
            return Result(None, f"sandbox error: {e}")
        finally:
            self.idle.put(w)

    def map(self, func: str, args: Sequence, limits: Limits | None = None) -> list[Result]:
        """Run `func` (a name in zygote.FUNCS) on each arg in parallel; results in input order."""
        if self.closed:
            raise RuntimeError("sandbox pool is closed")
        limits = limits or Limits()
        return list(self.executor.map(lambda a: self._one(func, a, limits), args))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if os.getpid() != self.pid:  # inherited through fork: the workers are not ours
            return
        self.executor.shutdown(wait=True)
        for w in self.workers:
            w.close()


_POOL: Pool | None = None
_LOCK = threading.Lock()


def get_pool() -> Pool:
    """The process-wide pool, created on first use (again after a fork), closed at exit."""
    global _POOL
    with _LOCK:
        if _POOL is None or _POOL.closed or _POOL.pid != os.getpid():
            _POOL = Pool()
        return _POOL


def shutdown() -> None:
    """Stop the process-wide pool's workers (a later call to get_pool() starts new ones)."""
    global _POOL
    with _LOCK:
        if _POOL is not None:
            _POOL.close()
            _POOL = None


atexit.register(shutdown)


def run_python(programs: Sequence[str], limits: Limits | None = None) -> list[Result]:
    """Execute untrusted PoT programs in the sandbox; each result holds the answer or an error."""
    return run("python", programs, limits)


def run(func: str, args: Sequence, limits: Limits | None = None) -> list[Result]:
    """Run sandbox function `func` ("python" or "eot") on each arg, in the process-wide pool."""
    return get_pool().map(func, list(args), limits) if len(args) else []
