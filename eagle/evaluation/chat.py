"""Chat prompts for evaluation: the tokenizer's own chat template or a named FastChat template.

The prompt of every turn is rebuilt from the running conversation (user turns and the answers
generated so far), so turn 2 of an MT-bench question sees the model's own turn-1 answer. Models
whose tokenizer has no chat template (Vicuna, for example) name a FastChat conversation
template instead (``--template vicuna_v1.1``); ``fschat`` is imported only in that case.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerBase

Message = dict[str, str]


class ChatFormatter:
    """Turns a conversation into prompt token ids and generated ids into answer text."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, template: str | None = None) -> None:
        """Use ``template`` (a FastChat template name) or, when None, the tokenizer's template.

        Raises ``ValueError`` when neither is available or the name is unknown.
        """
        self.tokenizer = tokenizer
        self.template = template
        if template is not None:
            self._stop_strings = _fastchat_stop_strings(_fastchat_conversation(template))
        elif not tokenizer.chat_template:
            raise ValueError(
                "the tokenizer has no chat template: pass --template NAME with a FastChat "
                "conversation template (for example vicuna_v1.1)"
            )
        else:
            self._stop_strings = ()

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        """Token ids of the prompt that asks for the next assistant message.

        ``messages`` alternate ``{"role": "user"|"assistant", "content": str}``, user first,
        and end with a user message.
        """
        if self.template is not None:
            return self.tokenizer(self._fastchat_prompt(messages))["input_ids"]
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def answer_text(self, token_ids: list[int]) -> str:
        """Decode generated ids without special tokens, cut at the template's stop string."""
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        for stop in self._stop_strings:
            text = text.split(stop, 1)[0]
        return text.strip()

    def _fastchat_prompt(self, messages: list[Message]) -> str:
        conversation = _fastchat_conversation(self.template)
        user, assistant = conversation.roles[0], conversation.roles[1]
        for message in messages:
            role = user if message["role"] == "user" else assistant
            conversation.append_message(role, message["content"])
        conversation.append_message(assistant, None)
        return conversation.get_prompt()


def check_template(name: str | None) -> None:
    """Raise ValueError when ``name`` is not a FastChat template (None, the default, is fine)."""
    if name is not None:
        _fastchat_conversation(name)


def _fastchat_conversation(name: str) -> Any:
    try:
        from fastchat.conversation import conv_templates
    except ImportError as error:
        raise ValueError(
            f"--template {name} needs FastChat: pip install fschat (or eagle-llm[eval])"
        ) from error
    if name not in conv_templates:
        raise ValueError(
            f"unknown --template {name!r}; FastChat templates: {', '.join(sorted(conv_templates))}"
        )
    return conv_templates[name].copy()


def _fastchat_stop_strings(conversation: Any) -> tuple[str, ...]:
    stop = conversation.stop_str
    if not stop:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)
