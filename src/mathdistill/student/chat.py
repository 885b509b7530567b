"""One place that turns a user message into the exact prompt text the student sees.

Training and evaluation both go through `render_prompt`, so the chat template is applied
identically in both.
"""

from __future__ import annotations

from mathdistill.models import end_of_turn  # noqa: F401 (the model's end-of-turn text: part of this API)


def render_prompt(tokenizer, user: str, system: str | None = None) -> str:
    """Chat-template `user` (and optional `system`) with the generation prompt appended.

    Models without a chat template get the plain text followed by a newline.
    """
    if getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}
        ]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return (f"{system}\n\n" if system else "") + user + "\n"


def render_few_shot(tokenizer, examples: list[tuple[str, str]], user: str, system: str | None = None) -> str:
    """k-shot prompt: each (question, answer) exemplar as a prior user/assistant turn."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system}] if system else []
        for q, a in examples:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        messages.append({"role": "user", "content": user})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    shots = "".join(f"{q}\n{a}\n\n" for q, a in examples)
    return (f"{system}\n\n" if system else "") + shots + user + "\n"


def render_completion(tokenizer, text: str) -> str:
    """Assistant `text` as a training target: the text followed by the end-of-turn token."""
    eot = end_of_turn(tokenizer)
    return text if text.endswith(eot) else text + eot


def prompt_token_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of a rendered prompt, exactly as generation feeds them (and training masks them):
    a chat-templated prompt already starts with BOS, so the tokenizer must not add a second one."""
    bos = getattr(tokenizer, "bos_token", None)
    special = not (bos and prompt.startswith(bos))
    return tokenizer(prompt, add_special_tokens=special)["input_ids"]
