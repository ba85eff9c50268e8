"""A conversation in, prompt ids out; generated ids in, answer text out.

``ChatFormatter`` is what evaluation and the web UI talk to a chat model through: the prompt of
every turn is rebuilt from the running conversation (user turns and the answers given so far,
so turn 2 of an MT-bench question sees the model's own turn-1 answer), rendered with the
template named by ``--template`` (the registry in ``eagle.chat.templates``; default "auto", the
tokenizer's own). Answers are decoded without special tokens and cut at the template's stop
strings. ``common_prefix`` compares two answer texts (a decoding and its re-decoding in the web
UI, a method's answer and the baseline's in the speed report).
"""

from __future__ import annotations

from typing import Any

from eagle.chat.templates import AUTO, Message, prompt_ids, resolve_template


class ChatFormatter:
    """Turns a conversation into prompt token ids and generated ids into answer text."""

    def __init__(self, tokenizer: Any, template: str | None = AUTO) -> None:
        """Use the chat template called ``template`` (None: "auto", the tokenizer's own).

        Raises ``ValueError`` for an unknown name, a FastChat name without fschat, or "auto"
        with a tokenizer that has no chat template.
        """
        self.tokenizer = tokenizer
        self.template = resolve_template(template or AUTO, tokenizer)
        self._stop_strings = self.template.stop_strings

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        """Token ids of the prompt that asks for the next assistant message.

        ``messages`` alternate ``{"role": "user"|"assistant", "content": str}``, user first,
        and end with a user message.
        """
        return prompt_ids(self.tokenizer, self.template, messages)

    def answer_text(self, token_ids: list[int]) -> str:
        """Decode generated ids without special tokens, cut at the template's stop string."""
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        for stop in self._stop_strings:
            text = text.split(stop, 1)[0]
        return text.strip()


def common_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix of two strings."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:  # the common case, at C speed
        return n
    return next(i for i in range(n) if a[i] != b[i])
