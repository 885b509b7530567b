"""Serve a distilled student over an OpenAI-compatible HTTP API (`mathdistill serve`).

    mathdistill serve runs/etd                      # names etd, etd:cot, etd:pot, etd:eot (the run's rows)
    mathdistill serve --model smollm2-135m --adapter runs/cot/train/student --thought cot,pot

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")
    r = client.chat.completions.create(model="etd", messages=[{"role": "user", "content": "Tom has 3 ..."}])
    r.choices[0].message.content                    # the chosen rationale
    r.choices[0].mathdistill                        # {"answer": "7", "format": "pot", "answers": {...}, ...}

The served names are the run's result-row names (contract 9) and each chooses an inference
(`methods.serving`): one format, or every format and their majority vote (ETD); a method with
another inference (LoRID's loop) declares it with the method (`Method.serve`). Prompts are built as evaluation
builds them (the question, the format's trigger and instruction, the chat template, the run's
k-shot exemplars); generation, answers and votes are the project's own components
(`student.generate`, `thoughts.get(t).extract_batch`, `answers.vote`). Concurrent requests are
generated together (`serve.batching`). HTTP, limits and errors: `serve.app`.

Parts: `inference` (Engine, Context, Defaults, served_run, served_model), `batching` (Batcher), `app`
(create_app, run_server, Limits), `export` (a run's student as a model folder), `cli` (the command). The
inference types (Served, Single, Vote, Calculated, Reply, default_serve) are `methods.serving`'s, here too.
"""

from __future__ import annotations

from mathdistill.methods.serving import Calculated, Reply, Served, Single, Vote, default_serve, family
from mathdistill.serve.inference import Context, Defaults, Engine, Options, RequestError, served_model, served_run

__all__ = ["Calculated", "Context", "Defaults", "Engine", "Options", "Reply", "RequestError", "Served", "Single",
           "Vote", "default_serve", "family", "served_model", "served_run", "load_engine"]


def load_engine(served: Served, model: str, defaults: Defaults, batch_size: int | None = None,
                wait: float = 0.01) -> Engine:
    """Load the student for `served` (one adapter merged into the weights unless `served.merge` is
    False; several kept apart, chosen per call) and start its batcher; warm the sandbox when a
    served format executes code."""
    from mathdistill.serve.batching import Batcher
    from mathdistill.student.adapters import load_merged, load_with_adapters

    merged = []
    if len(served.adapters) == 1 and served.merge:
        (name, folder), = served.adapters.items()
        net, tok = load_merged(model, folder)
        merged = [name]
    else:
        net, tok = load_with_adapters(model, served.adapters)
    from mathdistill import thoughts

    if set(thoughts.where("executes")) & {f for inf in served.models.values() for f in getattr(inf, "formats", ())}:
        from mathdistill.sandbox import get_pool

        get_pool()  # the first PoT/EoT request does not wait for the workers to start
    return Engine(net, tok, Batcher(net, tok, batch_size or defaults.batch_size, wait), defaults, merged)
