"""Start a command, wait until a condition holds, then kill its whole process group (a crash mid-work).

Tests import it as `from killing import kill_when` (tests/ is on sys.path, as for fake_server)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Callable


def kill_when(cmd: list[str], ready: Callable[[], bool], env: dict, cwd, timeout: float = 600,
              settle: float = 0.0) -> None:
    """Run `cmd` in its own session; as soon as `ready()` is true (polled every 0.1 s), wait `settle`
    seconds and SIGKILL its process group. Fails if the command ended first or `timeout` passed."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None and not ready():
            time.sleep(0.1)
        assert proc.poll() is None, f"run ended before it could be killed:\n{proc.stdout.read()}"
        assert time.time() < deadline, f"not ready after {timeout:.0f} s: {cmd}"
        time.sleep(settle)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def has_checkpoint(checkpoints) -> bool:
    """A complete Trainer checkpoint (trainer_state.json written) exists under `checkpoints`."""
    return any((c / "trainer_state.json").exists() for c in checkpoints.glob("checkpoint-*"))
