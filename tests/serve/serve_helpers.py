"""Helpers of the serve tests (a scripted batcher, a scripted engine, a live uvicorn server). A module of
its own, not conftest: several test folders have a conftest.py and only one can be imported as `conftest`."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import Future
from types import SimpleNamespace

class ScriptedBatcher:
    """Stands in for `serve.batching.Batcher`: the completion of a prompt is `script[question][format]`
    (format read from the prompt's trigger); `gate` (an Event) holds every call until it is set."""

    def __init__(self, script: dict):
        self.script, self.gate, self.calls = script, None, []
        self.stats = {"generate_calls": 0}

    def reply(self, prompt: str) -> tuple[str, str]:
        user = prompt.split("<|im_start|>user\n")[-1].split("<|im_end|>")[0]
        m = re.search(r"\n\[(\w+)\] ", user)
        question, fmt = user[: m.start()], m.group(1).lower()
        if question == "CRASH":
            raise RuntimeError("scripted crash")
        return question, self.script.get(question, {}).get(fmt, "The answer is 5.")

    def submit(self, prompts, settings, seeds=None, on_text=None) -> Future:
        from mathdistill.student.generate import Generation
        from mathdistill.student.stopping import cut_at_stop

        fut = Future()
        try:
            if self.gate is not None:
                self.gate.wait(30)
            self.calls.append((list(prompts), dict(settings)))
            self.stats["generate_calls"] += 1
            gens = []
            for p in prompts:
                text = self.reply(p)[1]
                if on_text is not None:
                    for i in range(0, len(text), 3):  # in pieces, as a streamer hands them on
                        on_text(text[i : i + 3])
                        time.sleep(0.001)
                n = min(len(text.split()), settings["max_new_tokens"])
                gens.append(Generation([cut_at_stop(text, settings.get("stop") or [])] * settings["num_samples"],
                                       [n] * settings["num_samples"], [False] * settings["num_samples"]))
            fut.set_result(gens)
        except Exception as e:
            fut.set_exception(e)
        return fut

    def generate(self, prompts, settings, seeds=None):
        return self.submit(prompts, settings, seeds).result()

    def close(self):
        pass


def scripted_engine(tokenizer, script: dict, context: int = 2048):
    from mathdistill.serve import Defaults, Engine

    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=context))
    return Engine(model, tokenizer, ScriptedBatcher(script), Defaults(max_new_tokens=64))


class LiveServer:
    """`app` served by uvicorn on a free loopback port in a thread of this process."""

    def __init__(self, app):
        import uvicorn

        from mathdistill.serve.app import listen

        sock = listen("127.0.0.1", 0)
        app.state.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{app.state.port}/v1"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and time.time() < deadline:
            time.sleep(0.02)
        assert self.server.started, "the server did not start"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=30)
