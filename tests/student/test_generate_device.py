"""Generation at GPU speed, tested on the CPU up to the CUDA call: the on-device stop checks
(`batch_hooks.Finish`) stop exactly where the per-row Python checks they replaced did (scripted token
streams with EOS, stop strings, multi-byte characters, loops, budgets, earlier segments and
preemption), the batched loop check equals `ends_in_loop`, the batch size from free memory,
and the shared-prefix attention in the model's dtype."""

from __future__ import annotations

import random

import pytest

from mathdistill.student import batch_hooks, batch_size, prefix_cache, stopping
from mathdistill.student.generate import batch_size_for_memory, ends_in_loop


class OldFinish:
    """The stopping criterion as it was before the checks moved to the device (HEAD a84cb78),
    kept here as the reference: per-row Python every step."""

    def __init__(self, tokenizer, width, gen_start, budget, eos, stop, preempt_at=0, loop_stop=False, min_steps=None):
        self.tokenizer, self.width, self.gen_start, self.budget = tokenizer, width, gen_start, budget
        self.eos, self.stop = set(eos), list(stop)
        self.preempt_at, self.loop_stop = preempt_at, loop_stop
        self.min_steps = batch_hooks.PREEMPT_MIN_STEPS if min_steps is None else min_steps
        self.looped = [False] * len(budget)
        self.tail = max((len(s) for s in self.stop), default=0) + 2
        self.length = [None] * len(budget)
        self.preempted = False

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        rows, cur = input_ids.shape
        steps = cur - self.width
        last = input_ids[:, -1].tolist()
        for i in range(rows):
            if self.length[i] is not None:
                continue
            hit = last[i] in self.eos or steps >= self.budget[i]
            if not hit and self.stop:
                tail = self.tokenizer.decode(input_ids[i, max(self.gen_start[i], cur - self.tail) :])
                hit = any(s in tail for s in self.stop)
            if not hit and self.loop_stop and steps % stopping.LOOP_EVERY == 0:
                hit = self.looped[i] = ends_in_loop(input_ids[i, self.gen_start[i] :].tolist())
            if hit:
                self.length[i] = steps
        running = sum(n is None for n in self.length)
        if running and steps >= self.min_steps and running <= self.preempt_at:
            self.preempted = True
            return torch.ones(rows, dtype=torch.bool, device=input_ids.device)
        return torch.tensor([n is not None for n in self.length], dtype=torch.bool, device=input_ids.device)


@pytest.fixture(scope="module")
def tok(student_path):
    from mathdistill.models import load_tokenizer

    return load_tokenizer(student_path)


PIECES = ["The", " answer", " is", " 4", "2", ".", "\n", "\n\n", "Question", ":", " Q", "é", "🙂", " =", " 7", "Step",
          " 1", "::", ".\n"]


def streams(tok, rng, rows, length):
    """Token streams: random pieces, EOS now and then, some rows falling into a loop."""
    pool = sorted({i for p in PIECES for i in tok.encode(p, add_special_tokens=False)})
    out = []
    for _ in range(rows):
        ids = [rng.choice(pool) for _ in range(length)]
        if rng.random() < 0.4:  # a loop from some step on
            start, block = rng.randrange(length // 2), [rng.choice(pool) for _ in range(rng.choice([1, 2, 5, 17, 40]))]
            ids[start:] = (block * length)[: length - start]
        if rng.random() < 0.3:
            ids[rng.randrange(length)] = tok.eos_token_id
        out.append(ids)
    return out


def drive(finish, tok, prompts, streams_, budget):
    """Run a stopping criterion as `model.generate` would: one column per step (a finished row
    gets padding) until it says every row is done; the per-step answers."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    answers, done = [], torch.zeros(len(prompts), dtype=torch.bool)
    for step in range(max(budget)):
        col = torch.tensor([tok.pad_token_id if d else s[step] for s, d in zip(streams_, done.tolist())])
        ids = torch.cat([ids, col[:, None]], 1)
        stop = finish(ids, None)
        answers.append(stop.tolist())
        done |= stop
        if done.all():
            break
    return answers


CONFIGS = [  # stop strings, loop stop, preempt_at, min_steps
    ([], False, 0, 32), (["\n\n"], False, 0, 32), (["Question:", "\n\n"], True, 0, 32),
    (["🙂"], True, 3, 8), (["é", ".\n"], True, 6, 4), ([], True, 2, 16), ([" 42"], False, 0, 32),
]


def case(tok, seed, stop, rows=10):
    """A batch: prompts (some with tokens generated in an earlier batch: a hand-over, so without
    a stop string), where each row's generated text starts, budgets, token streams."""
    rng = random.Random(seed * 100 + len(stop))
    pool = [i for p in PIECES for i in tok.encode(p, add_special_tokens=False)]
    prompt = tok.encode("Question: how many? Answer:")
    earlier = []
    while len(earlier) < rows:
        e = [rng.choice(pool) for _ in range(rng.choice([0, 0, 3, 30]))]
        if not any(x in tok.decode(e) for x in stop) and tok.eos_token_id not in e:
            earlier.append(e)
    prompts = [prompt[: rng.randrange(4, len(prompt) + 1)] + e for e in earlier]
    width = max(len(p) for p in prompts)
    budget = [rng.randrange(5, 90) for _ in range(rows)]
    return prompts, width, [width - len(e) for e in earlier], budget, streams(tok, rng, rows, max(budget))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("stop,loop_stop,preempt_at,min_steps", CONFIGS)
def test_device_stop_checks_stop_where_the_old_ones_did(tok, seed, stop, loop_stop, preempt_at, min_steps):
    prompts, width, gen_start, budget, s = case(tok, seed, stop)
    args = (tok, width, gen_start, budget, [tok.eos_token_id], stop)
    kw = dict(preempt_at=preempt_at, loop_stop=loop_stop, min_steps=min_steps)
    old, new = OldFinish(*args, **kw), batch_hooks.Finish(*args, **kw)
    assert drive(new, tok, prompts, s, budget) == drive(old, tok, prompts, s, budget)
    assert new.length == old.length and new.looped == old.looped and new.preempted == old.preempted


def test_scripted_streams_reach_every_kind_of_stop(tok):
    """The table above is not vacuous: over its seeds, rows stop by EOS, stop string, loop,
    budget and preemption."""
    kinds = set()
    for seed in range(4):
        for stop, loop_stop, preempt_at, min_steps in CONFIGS:
            prompts, width, gen_start, budget, s = case(tok, seed, stop)
            f = OldFinish(tok, width, gen_start, budget, [tok.eos_token_id], stop,
                          preempt_at=preempt_at, loop_stop=loop_stop, min_steps=min_steps)
            drive(f, tok, prompts, s, budget)
            kinds |= {"preempt"} if f.preempted else set()
            for r, n in enumerate(f.length):
                if n is None:
                    continue
                if f.looped[r]:
                    kinds.add("loop")
                elif s[r][n - 1] == tok.eos_token_id:
                    kinds.add("eos")
                elif n >= budget[r]:
                    kinds.add("budget")
                else:
                    kinds.add("stop")
    assert kinds == {"preempt", "loop", "eos", "budget", "stop"}


def test_batched_loop_check_equals_ends_in_loop():
    import torch

    rng = random.Random(0)
    rows, seqs = [], []
    for _ in range(300):
        n = rng.randrange(0, 260)
        ids = [rng.randrange(3) for _ in range(n)]
        if n and rng.random() < 0.6:
            p = rng.randrange(1, 70)
            block = [rng.randrange(5) for _ in range(p)]
            k = rng.randrange(n + 1)
            ids[k:] = (block * n)[: n - k]
        seqs.append(ids)
    width = 300
    batch = torch.tensor([[9] * (width - len(s)) + s for s in seqs])  # 9: prompt / padding, never compared
    window = min(width, stopping.LOOP_WINDOW)
    got = stopping.loops(batch[:, width - window :], torch.tensor([len(s) for s in seqs])).tolist()
    want = [ends_in_loop(s) for s in seqs]
    assert got == want and 30 < sum(want) < 270


@pytest.mark.parametrize("free,tokens,want", [
    (60 * 2**30, 640, 1724), (60 * 2**30, 320, 4096), (8 * 2**30, 640, 229), (1, 640, 1), (0, 10, 1),
])
def test_batch_size_from_free_memory(free, tokens, want):
    kw = dict(layers=30, kv_heads=3, heads=9, head_dim=64, vocab=49152, dtype_bytes=2)
    per_row = 2 * 30 * 3 * 64 * 2 * tokens + 2 * 4 * 49152 + 9 * tokens * tokens * 4
    assert batch_size_for_memory(free, tokens_per_row=tokens, **kw) == want == max(1, min(4096, int(free * 0.8) // per_row))
    assert batch_size_for_memory(free, tokens_per_row=tokens, fraction=0.4, **kw) <= want
    assert batch_size_for_memory(free, tokens_per_row=tokens, cap=64, **kw) == min(want, 64)


def test_auto_batch_size_reads_the_model(monkeypatch):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    assert batch_size.auto_batch_size(model, 100) == batch_size.DEFAULT_BATCH_SIZE  # a CPU: the measured default
    per_row = 2 * 2 * 2 * 16 * 2 * 100 + 2 * 4 * 1000 + 4 * 100 * 100 * 4
    assert batch_size.auto_batch_size(model, 100, free_bytes=10**8) == int(10**8 * 0.8) // per_row


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 3e-2)])
def test_shared_prefix_attention_runs_in_the_model_dtype(dtype, tol):
    """Against plain softmax attention over [prefix | own tokens] in float64; the output keeps
    the query's dtype."""
    import torch

    dt = getattr(torch, dtype)
    g = torch.Generator().manual_seed(0)
    b, hq, hkv, s, t, p, d = 3, 6, 2, 1, 5, 7, 16
    q, k, v = (torch.randn(*shape, generator=g) for shape in [(b, hq, s, d), (b, hkv, t, d), (b, hkv, t, d)])
    pk, pv = torch.randn(1, hkv, p, d, generator=g), torch.randn(1, hkv, p, d, generator=g)
    mask = torch.ones(b, 1, s, p + t, dtype=torch.bool)
    mask[0, :, :, p : p + 2] = False  # row 0: two padding tokens
    key = k.to(dt)
    key.shared_prefix = (pk.to(dt), pv.to(dt))
    out, _ = prefix_cache.shared_prefix_attention(None, q.to(dt), key, v.to(dt), mask)
    assert out.dtype == dt and out.shape == (b, s, hq, d)
    keys = torch.cat([pk.expand(b, -1, -1, -1), k], 2).repeat_interleave(hq // hkv, 1).double()
    values = torch.cat([pv.expand(b, -1, -1, -1), v], 2).repeat_interleave(hq // hkv, 1).double()
    scores = (q.double() @ keys.transpose(-1, -2)) * d**-0.5
    want = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1) @ values
    assert (out.double() - want.transpose(1, 2)).abs().max() < tol
