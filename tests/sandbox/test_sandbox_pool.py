"""Pool behaviour: the loud fallback without namespaces, strict mode, clean exit, limits."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from mathdistill.sandbox import Limits, Pool, SandboxUnavailable
from mathdistill.sandbox import pool as pool_mod

from sandbox_helpers import descendants


@pytest.fixture
def no_namespaces(monkeypatch):
    monkeypatch.setattr(pool_mod, "UNSHARE", ["false"])  # as if `unshare` were refused


def test_strict_mode_refuses_to_run_without_namespaces(no_namespaces):
    with pytest.raises(SandboxUnavailable):
        Pool(workers=1, mode="strict")


def test_fallback_is_loud_and_still_confines(no_namespaces):
    existing = descendants(os.getpid())
    with pytest.warns(RuntimeWarning, match="SANDBOX WITHOUT NAMESPACES"):
        p = Pool(workers=1, mode="auto")
    try:
        assert not p.isolated
        rs = p.map("python", ["ans = 6 * 7", "import time\ntime.sleep(30)",
                              "import os\nos.system('sleep 100 &')\nans = 1",
                              "import os\nans = sorted(os.environ)"], Limits(timeout=1.0))
        assert rs[0].value == "42" and "timeout" in rs[1].error and rs[2].value == "1"
        assert "PATH" in rs[3].value and "MATHDISTILL" not in rs[3].value
        ours = descendants(os.getpid()) - existing
        assert len(ours) == 1  # the worker only: the background `sleep` was killed
    finally:
        p.close()


def test_no_process_left_after_interpreter_exit():
    """A script that uses the process-wide pool and just exits leaves nothing running."""
    code = textwrap.dedent("""
        import os
        from mathdistill.sandbox import run_python, get_pool
        print(run_python(["ans = 1"])[0].value)
        print(" ".join(str(w.proc.pid) for w in get_pool().workers if w.proc))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    value, pids = r.stdout.split("\n")[:2]
    assert value == "1" and pids
    for pid in map(int, pids.split()):
        assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split(")")[1][:3]


def test_limits_are_per_task():
    p = Pool(workers=1)
    try:
        big = "x = bytearray(300 * 1024**2)\nans = len(x)"
        assert p.map("python", [big], Limits(memory_mb=256))[0].error.startswith("MemoryError")
        assert p.map("python", [big], Limits(memory_mb=1024))[0].value == str(300 * 1024**2)
        spin = "import time\nt = time.time()\nwhile time.time() - t < 3:\n    pass\nans = 1"
        assert p.map("python", [spin], Limits(timeout=10, cpu_s=1))[0].error.startswith("crashed: SIGXCPU")
    finally:
        p.close()
