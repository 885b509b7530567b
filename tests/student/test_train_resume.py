"""A `mathdistill train` killed with SIGKILL resumes from its last checkpoint when re-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from mathdistill.student.train import TrainConfig, is_trained, train

pytestmark = pytest.mark.slow

ROWS = [{"prompt": f"What is {a} times {b}?", "completion": f"{a} x {b} = {a * b}. The answer is {a * b}."}
        for a, b in [(2, 3), (4, 5), (6, 7), (8, 9), (3, 3), (5, 2), (7, 4), (9, 6), (2, 8), (6, 6), (4, 3), (8, 2)]]
STEPS, SAVE = 6, 2


def cmd(data, out, model):
    return [sys.executable, "-m", "mathdistill.cli", "train", "--model", model, "--data", str(data), "--out", str(out),
            "--max-steps", str(STEPS), "--save-steps", str(SAVE), "--batch-size", "2", "--max-seq-len", "128",
            "--lr", "1e-3", "--warmup", "0"]


def test_sigkilled_run_resumes_and_matches_an_uninterrupted_one(tmp_path, student_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "run"
    # one thread everywhere: multi-threaded CPU reductions may sum in a different order in another
    # process, which is enough to move the losses compared below by ~1e-4 relative
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    first = subprocess.Popen(cmd(data, out, student_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    checkpoint = out / "checkpoints" / f"checkpoint-{SAVE}" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        assert first.poll() is None, first.stdout.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint written in time"
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL and not is_trained(out)

    again = subprocess.run(cmd(data, out, student_path), capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    result = json.loads(again.stdout.strip().splitlines()[-1])
    assert result["resumed_from"] in range(SAVE, STEPS, SAVE) and result["global_step"] == STEPS
    assert is_trained(out) and not (out / "checkpoints").exists()
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == STEPS
    assert [r["step"] for r in state["log_history"] if "loss" in r] == list(range(1, STEPS + 1))

    # optimizer, scheduler, RNG and data position were restored: same losses as a run never stopped
    same = TrainConfig(model=student_path, max_steps=STEPS, save_steps=SAVE, batch_size=2, max_seq_len=128, lr=1e-3,
                       warmup=0)  # what the command line above asks for
    straight = tmp_path / "straight"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(same.model_copy(update={"save_steps": 100}), data, straight)
    finally:
        torch.set_num_threads(threads)
    losses = [[r["loss"] for r in json.loads((d / "trainer_state.json").read_text())["log_history"] if "loss" in r]
              for d in (out, straight)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)

    # a finished run is detected: running it again returns at once
    assert train(same, data, out).skipped

    # the adapter loads with plain PEFT
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(student_path), str(out))
