"""A sandbox worker: `python -m mathdistill.sandbox.zygote [--isolated]`.

Started by the pool (normally inside fresh user/net/mount/PID namespaces, as their PID 1),
it locks itself down (jail.lock_down), pre-imports what programs use, then serves tasks
read as JSON lines on stdin, answering one JSON line each on stdout. Every task runs in a
fresh fork with rlimits, a scrubbed environment, an empty working directory and bounded
output; afterwards everything the task left behind is killed and /tmp is wiped. As PID 1
of its namespace the worker cannot be killed from inside it, and it cannot see the host.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import select
import shutil
import signal
import sys
import time

from mathdistill.sandbox import jail

# Functions a task may run (the parent chooses; programs never do). name -> "module:function"
FUNCS = {
    "python": "mathdistill.sandbox.program:run_program",
    "eot": "mathdistill.thoughts.eot_solver:solve_in_sandbox",
}
PRELOAD = ["math", "fractions", "decimal", "itertools", "collections", "datetime", "statistics",
           "mathdistill.sandbox.program"]
# Heavy modules are imported into the worker the first time a task needs them (a fork of a
# small process is cheaper, and most programs never import sympy). Trusted names only.
ON_DEMAND = {"sympy": ["sympy"], "numpy": ["numpy"]}
FUNC_NEEDS = {"eot": ["sympy", "mathdistill.thoughts.eot_solver"]}
# module -> "module:function" run once after importing it (loads lazy parts, fills caches)
WARM_UP = {"sympy": "mathdistill.sandbox.program:warm_sympy",
           "mathdistill.thoughts.eot_solver": "mathdistill.thoughts.eot_solver:warm_up"}
WORKDIR = "/tmp/task"
MAX_RESULT = 256 * 1024
NOBODY = 65534


def _resolve(name: str):
    module, fn = FUNCS[name].split(":")
    return getattr(importlib.import_module(module), fn)


def _child(task: dict, wfd: int, devnull: int, isolated: bool) -> None:
    """In the forked task process: confine, run, write the JSON result to `wfd`, exit."""
    os.setsid()  # own session: killpg(0) reaches nobody else
    jail.prctl(jail.PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with the worker
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.dup2(wfd, 3)
    os.closerange(4, 1 << 16)
    lim = task["limits"]
    if not isolated and os.getuid() == 0:  # no user namespace: at least do not run as root
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    jail.set_limits(lim["cpu_s"], lim["memory_mb"], lim["nproc"], lim["fsize_mb"])
    os.chdir(WORKDIR)
    os.environ.clear()
    os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": WORKDIR, "TMPDIR": WORKDIR,
                       "LANG": "C.UTF-8"})
    try:
        result = _resolve(task["func"])(task["arg"])
    except BaseException as e:  # the runner itself failed (e.g. MemoryError while formatting)
        result = {"value": None, "error": f"{type(e).__name__}: {e}"[:500]}
    data = json.dumps(result, default=str).encode()[:MAX_RESULT]
    while data:
        data = data[os.write(3, data):]
    os._exit(0)


def _signal_name(status: int) -> str:
    sig = os.WTERMSIG(status)
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = str(sig)
    hints = {"SIGXCPU": "CPU time limit", "SIGXFSZ": "file size limit", "SIGKILL": "killed",
             "SIGSEGV": "segmentation fault"}
    return f"crashed: {name}" + (f" ({hints[name]})" if name in hints else "")


def _kill_leftovers(pid: int, isolated: bool) -> None:
    """Kill every process the task left behind, and reap them all."""
    if isolated:  # we are PID 1 of the namespace: -1 means every other process in it
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
    else:  # no namespace: the task's session, then any orphan re-parented to us (subreaper)
        for target in [pid] + _children():
            try:
                os.killpg(target, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                os.kill(target, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if not isolated:
            for target in _children():
                try:
                    os.kill(target, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def _children() -> list[int]:
    try:
        with open(f"/proc/self/task/{os.getpid()}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


TMP_KEEP: list[str] = []  # read-only code folders bound into the private /tmp: never wiped


def _wipe_tmp(path: str = "/tmp") -> None:
    for entry in os.scandir(path):
        if entry.path in TMP_KEEP:
            continue
        if entry.is_dir(follow_symlinks=False) and any(k.startswith(entry.path + os.sep) for k in TMP_KEEP):
            os.chmod(entry.path, 0o755)
            _wipe_tmp(entry.path)  # an ancestor of kept code: empty it around the code
            continue
        if entry.is_dir(follow_symlinks=False):
            for root, dirs, _ in os.walk(entry.path):  # a task may have chmod-ed dirs to 000
                for d in dirs:
                    os.chmod(os.path.join(root, d), 0o700, follow_symlinks=False)
            os.chmod(entry.path, 0o700)
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def _cleanup(isolated: bool) -> None:
    """Remove whatever the last task wrote (isolated: all of the private /tmp)."""
    if isolated:
        _wipe_tmp()
    else:
        shutil.rmtree(WORKDIR, ignore_errors=True)
        if os.path.exists(WORKDIR):
            raise OSError(f"cannot remove {WORKDIR}")


def _preload_for(task: dict) -> None:
    """Import what this task will use into the worker itself, once, so its forks inherit it."""
    need = list(FUNC_NEEDS.get(task["func"], []))
    if task["func"] == "python" and isinstance(task.get("arg"), str):
        need += [m for key, mods in ON_DEMAND.items() if key in task["arg"] for m in mods]
    new = [m for m in need if m not in sys.modules]
    for m in new:
        try:
            importlib.import_module(m)
            if m in WARM_UP:
                module, fn = WARM_UP[m].split(":")
                getattr(importlib.import_module(module), fn)()
        except Exception:  # a task that needs it will report the error itself
            pass
    if new:
        gc.collect()
        gc.freeze()


def run_task(task: dict, devnull: int, isolated: bool) -> dict:
    _preload_for(task)
    start = time.monotonic()
    os.makedirs(WORKDIR, exist_ok=True)
    os.chmod(WORKDIR, 0o777)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rfd)
            _child(task, wfd, devnull, isolated)
        finally:
            os._exit(70)
    os.close(wfd)
    pidfd = os.pidfd_open(pid)
    deadline = start + float(task["timeout"])
    data, status, too_big = bytearray(), None, False
    watch = [rfd, pidfd]
    while status is None:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select(watch, [], [], left)
        if rfd in ready:
            chunk = os.read(rfd, 65536)
            if not chunk:
                watch.remove(rfd)
            elif len(data) + len(chunk) > MAX_RESULT:
                too_big = True
                break
            else:
                data += chunk
        if pidfd in ready:
            status = os.waitpid(pid, 0)[1]
    if status is not None and rfd in watch:  # drain what is already in the pipe
        while select.select([rfd], [], [], 0)[0]:
            chunk = os.read(rfd, 65536)
            if not chunk or len(data) + len(chunk) > MAX_RESULT:
                break
            data += chunk
    os.close(rfd)
    os.close(pidfd)
    _kill_leftovers(pid, isolated)
    seconds = round(time.monotonic() - start, 4)
    if status is None:
        error = "result too large" if too_big else f"timeout after {task['timeout']}s"
        return {"value": None, "error": error, "seconds": seconds}
    if os.WIFSIGNALED(status):
        return {"value": None, "error": _signal_name(status), "seconds": seconds}
    try:
        result = json.loads(data)
        if not isinstance(result, dict):
            raise ValueError
    except ValueError:
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        return {"value": None, "error": f"no result (exit code {code})", "seconds": seconds}
    value = result.get("value")
    return {"value": None if value is None else str(value)[:1000],
            "error": None if result.get("error") is None else str(result["error"])[:1000],
            "stdout": str(result.get("stdout") or "")[-1000:], "seconds": seconds}


def main() -> None:
    isolated = "--isolated" in sys.argv
    out = os.fdopen(os.dup(1), "wb", buffering=0)  # the protocol channel
    os.dup2(2, 1)  # stray prints go to stderr, never into the protocol
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as PID 1: ignored when sent from inside
    devnull = os.open(os.devnull, os.O_RDWR)
    info: dict = {"isolated": isolated, "pid": os.getpid()}
    try:
        if isolated:
            hide = [p for p in (os.environ.get("MATHDISTILL_SANDBOX_HIDE") or "").split(":") if p]
            keep = [p for p in (os.environ.get("MATHDISTILL_SANDBOX_KEEP") or "").split(":") if p]
            TMP_KEEP[:] = [p for p in (os.environ.get("MATHDISTILL_SANDBOX_TMP_KEEP") or "").split(":") if p]
            info.update(jail.lock_down(tmp_size_mb=256, hide_dirs=hide, keep=keep, tmp_keep=TMP_KEEP))
        else:
            jail.prctl(jail.PR_SET_CHILD_SUBREAPER, 1)
            global WORKDIR
            WORKDIR = os.path.join(os.environ.get("TMPDIR") or "/tmp", f"mathdistill-sandbox-{os.getpid()}")
        for name in PRELOAD:
            importlib.import_module(name)
        gc.collect()
        gc.freeze()  # forked tasks then share these pages instead of copying them
    except Exception as e:
        out.write((json.dumps({"ready": False, "error": f"{type(e).__name__}: {e}"}) + "\n").encode())
        sys.exit(1)
    out.write((json.dumps({"ready": True, **info}) + "\n").encode())
    for line in sys.stdin.buffer:
        task = json.loads(line)
        try:
            reply = run_task(task, devnull, isolated)
        except Exception as e:  # the worker itself is in trouble: say so, then let the pool replace us
            out.write((json.dumps({"id": task.get("id"), "value": None, "fatal": True,
                                   "error": f"sandbox worker error: {type(e).__name__}: {e}"}) + "\n").encode())
            sys.exit(1)
        reply["id"] = task.get("id")
        try:
            _cleanup(isolated)
        except Exception as e:  # the result stands, but this worker is no longer clean
            reply["fatal"] = f"cleanup failed: {type(e).__name__}: {e}"
        out.write((json.dumps(reply) + "\n").encode())
        if reply.get("fatal"):
            sys.exit(1)
    _cleanup(isolated)


if __name__ == "__main__":
    main()
