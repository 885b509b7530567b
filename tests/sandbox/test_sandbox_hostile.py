"""A hostile corpus against the sandbox: each program is contained (error recorded), nothing
escapes (no host files, no network, no secrets, parent alive), no process is left behind, and
ordinary programs still score correctly afterwards."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest

from mathdistill.sandbox import Limits, Pool
from mathdistill.sandbox import pool as pool_mod
from mathdistill.thoughts import exemplars as ex
from sandbox_helpers import descendants

SECRET = "MATHDISTILL_TEST_SECRET_" + uuid.uuid4().hex
MARK = "mathdistill-escape-" + uuid.uuid4().hex[:8]
LIMITS = Limits(timeout=2.0, memory_mb=512)


@pytest.fixture(scope="module")
def listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(5)
    s.settimeout(0.2)
    yield s
    s.close()


@pytest.fixture(scope="module")
def home_secret():
    """A token file in $HOME, as other tools leave them (~/.netrc, ~/.cache/huggingface/token)."""
    path = Path(os.path.expanduser("~")) / f".{MARK}-token"
    path.write_text(SECRET)
    yield path
    path.unlink()


@pytest.fixture(scope="module")
def pool():
    os.environ[SECRET] = "s3cr3t-value"
    try:
        p = Pool(workers=2)
    finally:
        del os.environ[SECRET]
    if not p.isolated:
        p.close()
        pytest.skip("Linux namespaces unavailable: the sandbox runs in its loud fallback mode")
    yield p
    p.close()


def hostile(port: int) -> dict[str, tuple[str, str]]:
    """name -> (program, substring expected in the recorded error; '' = must not error)."""
    home = os.path.expanduser("~")
    me = os.getpid()
    return {
        "infinite loop": ("while True:\n    pass", "timeout|CPU"),
        "sleep": ("import time\ntime.sleep(60)\nans = 1", "timeout"),
        "fork storm": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
                       "timeout|CPU"),
        "memory hog": ("x = bytearray(16 * 1024**3)\nans = 1", "MemoryError"),
        "slow memory hog": ("xs = []\nwhile True:\n    xs.append(bytearray(50 * 1024**2))", "MemoryError|timeout"),
        "huge print": ("while True:\n    print('x' * 1000)", "OutputLimit"),
        "huge raw output": ("import os\nwhile True:\n    os.write(1, b'x' * 65536)", "timeout|CPU"),
        "big file": ("with open('big', 'wb') as f:\n    while True:\n        f.write(b'x' * 2**20)",
                     "file size|SIGXFSZ|File too large|No space"),
        "write /tmp": (f"open('/tmp/{MARK}-tmp', 'w').write('x')\nans = 1", ""),
        "write $HOME": (f"open('{home}/{MARK}-home', 'w').write('x')\nans = 1", "Read-only|Permission|No such"),
        "write cwd of parent": (f"open('{os.getcwd()}/{MARK}-cwd', 'w').write('x')\nans = 1",
                                "Read-only|Permission|No such"),
        "os.system": (f"import os\nos.system('touch /tmp/{MARK}-sys {home}/{MARK}-sys2')\n"
                      f"os.system('sleep 100 &')\nans = 1", ""),
        "subprocess": (f"import subprocess\nsubprocess.Popen(['sleep', '100'])\n"
                       f"subprocess.run(['sh', '-c', 'echo x > {home}/{MARK}-sub'])\nans = 1", ""),
        "double-fork daemon": ("import os, time\nif os.fork() == 0:\n    os.setsid()\n"
                               "    if os.fork() == 0:\n        time.sleep(100)\n    os._exit(0)\nans = 1", ""),
        "network": (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\nans = 1",
                    "Network is unreachable|refused|timed out"),
        "parent env": (f"import os, glob\nfound = '{SECRET}' in os.environ\n"
                       f"for p in glob.glob('/proc/*/environ'):\n    try:\n"
                       f"        found = found or b'{SECRET}' in open(p, 'rb').read()\n"
                       f"    except OSError:\n        pass\nans = int(found)", ""),
        "read a token in $HOME": (f"ans = open('{home}/.{MARK}-token').read()", "No such file"),
        "kill parent": (f"import os, signal\nfor pid in (os.getppid(), 1, {me}, {os.getppid()}):\n    try:\n"
                        f"        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n"
                        f"os.killpg(0, signal.SIGKILL)", "SIGKILL"),
        "kill everything": ("import os, signal\nos.kill(-1, signal.SIGKILL)\nans = 1", "No such process|SIGKILL"),
        "spoof the worker's replies": ("import os\nfd = os.open('/proc/1/fd/3', os.O_WRONLY)\n"
                                       "os.write(fd, b'{\"id\": 0, \"value\": \"666\"}\\n')\nans = 1",
                                       "Permission denied"),
        "ptrace the worker": ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                              "assert libc.ptrace(16, 1, 0, 0) == 0, ctypes.get_errno()", "AssertionError: 1\\b"),
        "segfault": ("import ctypes\nctypes.string_at(0)", "SIGSEGV"),
        "recursion": ("def f(n):\n    return f(n + 1)\nans = f(0)", "RecursionError"),
        "exit without answer": ("import os\nos._exit(0)", "no result"),
        "remount": ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                    "r = libc.mount(b'none', b'/', None, 32 | 4096, None)\n"  # MS_REMOUNT|MS_BIND rw
                    "open('/" + MARK + "-root', 'w')\nans = r", "Read-only|Permission"),
    }


def test_hostile_corpus_is_contained(pool, listener, home_secret):
    home = Path(os.path.expanduser("~"))
    corpus = hostile(listener.getsockname()[1])
    # processes of this test session that are not this pool's (e.g. the process-wide pool earlier tests used)
    mine = {w.proc.pid for w in pool.workers if w.proc}
    others = descendants(os.getpid()) - mine - {c for w in mine for c in descendants(w)}
    # interleave ordinary programs: they run in the same pool, at the same time
    ordinary = list(zip(ex.POT, ex.ANSWERS))
    programs = list(corpus.values())
    codes = [c for c, _ in programs] + [c for c, _ in ordinary]
    t0 = time.monotonic()
    results = pool.map("python", codes, LIMITS)
    elapsed = time.monotonic() - t0
    for (name, (code, expect)), r in zip(corpus.items(), results):
        if expect:
            assert r.error and re.search(expect, r.error), f"{name}: {r}"
        else:
            assert r.error is None, f"{name}: {r}"
    by_name = dict(zip(corpus, results))
    assert by_name["parent env"].value == "0"  # the secret is nowhere to be read
    for r, (_, gold) in zip(results[len(programs):], ordinary):
        assert r.value == gold and r.error is None
    # nothing escaped
    for path in [Path("/tmp") / f"{MARK}-tmp", Path("/tmp") / f"{MARK}-sys", home / f"{MARK}-home",
                 home / f"{MARK}-sys2", home / f"{MARK}-sub", Path.cwd() / f"{MARK}-cwd", Path("/") / f"{MARK}-root"]:
        assert not path.exists(), f"{path} was written from inside the sandbox"
    with pytest.raises(OSError):  # nobody connected to our listener
        listener.accept()
    # no process left behind: only each worker's `unshare` and its PID 1 remain
    live = descendants(os.getpid()) - others
    workers = {w.proc.pid for w in pool.workers if w.proc}
    zygotes = {c for w in workers for c in descendants(w)}
    assert live == workers | zygotes and len(zygotes) == len(workers), (live, workers, zygotes)
    assert elapsed < 60


def test_misbehaving_worker_is_replaced(pool, monkeypatch):
    """A frozen worker (SIGSTOP from outside) is killed after timeout + grace and replaced."""
    monkeypatch.setattr(pool_mod, "GRACE", 0.5)
    w = pool.workers[0]
    if w.proc is None:
        w.start()
    old = w.proc.pid
    zygote = next(iter(descendants(old)))
    os.kill(zygote, signal.SIGSTOP)
    r = w.run("python", "ans = 1", Limits(timeout=0.5))
    assert r.value is None and "replaced" in r.error
    assert w.proc.pid != old and not (descendants(os.getpid()) & ({old, zygote}))
    assert w.run("python", "ans = 2", LIMITS).value == "2"
    # a worker killed from outside is restarted on its next task
    os.killpg(w.proc.pid, signal.SIGKILL)
    w.proc.wait()
    assert w.run("python", "ans = 3", LIMITS).value == "3"


def test_shutdown_leaves_no_process():
    existing = descendants(os.getpid())
    p = Pool(workers=2)
    assert [r.value for r in p.map("python", ["ans = 1", "ans = 2", "print(3)"])] == ["1", "2", "3"]
    ours = descendants(os.getpid()) - existing
    assert len(ours) == (4 if p.isolated else 2)  # per worker: `unshare` + the namespace PID 1
    p.close()
    assert not (descendants(os.getpid()) & ours)


def test_package_under_tmp_stays_isolated_and_read_only(pool, tmp_path):  # pool: skips without namespaces
    """A checkout under /tmp (CI clones, scratch venvs) is hidden by the worker's private /tmp
    unless bound back: the sandbox must still start isolated, import its code, keep that code
    read-only, and wipe everything a task wrote around it."""
    import json
    import shutil
    import subprocess
    import sys

    import mathdistill

    if not str(tmp_path).startswith("/tmp/"):
        pytest.skip("needs a temporary folder under /tmp")
    src = tmp_path / "checkout" / "src"
    shutil.copytree(Path(mathdistill.__file__).parent, src / "mathdistill",
                    ignore=shutil.ignore_patterns("__pycache__"))
    script = f"""
import json
from mathdistill.sandbox.pool import Pool
p = Pool(workers=1)
pkg = {str(src / "mathdistill")!r}
write = "open(" + repr(pkg + "/evil.py") + ", 'w').write('x')\\nans = 1"
litter = "import os\\nopen('/tmp/litter.txt', 'w').write('x')\\nans = len(os.listdir('/tmp'))"
count = "import os\\nans = sorted(os.listdir('/tmp'))"
res = p.map("python", [write, litter, count])
print(json.dumps({{"isolated": p.isolated, "kept": p.info.get("tmp_kept"),
                   "results": [[r.value, r.error] for r in res]}}))
p.close()
"""
    env = {**os.environ, "PYTHONPATH": str(src), "MATHDISTILL_SANDBOX": "strict"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["isolated"] and str(src) in out["kept"]
    (wrote, err), _, (listing, _) = out["results"]
    assert wrote is None and "Read-only" in err  # the code is visible but not writable
    assert not (src / "mathdistill" / "evil.py").exists()
    assert "litter.txt" not in listing  # what the previous task wrote was wiped
    assert src.relative_to("/tmp").parts[0] in listing  # the kept code's ancestors survive the wipe
