"""Streaming through the serving batcher: a streamed prompt is a row among the others of its settings, and its
pieces join to exactly the text the batched path gives (greedy and seeded sampling alike), on the slot engine
and on generate's batches (MATHDISTILL_SLOTS=0, the path of a model the engine cannot run)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
@pytest.mark.parametrize("slots", ["1", "0"])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_streamed_text_is_the_batched_text(student, temperature, slots, monkeypatch):
    monkeypatch.setenv("MATHDISTILL_SLOTS", slots)
    from mathdistill.serve.batching import Batcher
    from mathdistill.student.chat import render_prompt
    from mathdistill.student.generate import generate

    model, tok = student
    prompts = [render_prompt(tok, q) for q in ("What is 12 * 3?", "Name two prime numbers.")]
    settings = {"adapter": None, "max_new_tokens": 24, "temperature": temperature, "top_p": 0.9, "num_samples": 1,
                "stop": (), "loop_stop": False}
    seeds = [5, 6] if temperature else None
    batcher = Batcher(model, tok, batch_size=4, wait=0.5)
    try:
        pieces: list[str] = []
        streamed = batcher.submit(prompts[:1], settings, seeds[:1] if seeds else None, on_text=pieces.append)
        plain = batcher.submit(prompts[1:], settings, seeds[1:] if seeds else None)
        got = streamed.result()[0], plain.result()[0]
    finally:
        batcher.close()
    want = generate(model, tok, prompts, max_new_tokens=24, temperature=temperature, top_p=0.9, seeds=seeds,
                    batch_size=2, progress=False)
    assert len(pieces) > 1 and "".join(pieces) == got[0].text == want[0].text
    assert got[1] == want[1]
    assert batcher.stats["generate_calls"] == 1 and batcher.stats["streams"] == 1  # one engine call for both
